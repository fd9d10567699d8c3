//! The console's static files, built into the binary.

/// The page.
pub(crate) const INDEX_HTML: &str = include_str!("../../assets/console.html");
/// The page's script.
pub(crate) const CONSOLE_JS: &str = include_str!("../../assets/console.js");
/// Styles shared by the console and the HTML report.
pub(crate) const DEMO_CSS: &str = include_str!("../../assets/demo.css");
/// Chart helpers shared by the console and the HTML report.
pub(crate) const CHARTS_JS: &str = include_str!("../../assets/charts.js");
/// uPlot (MIT), `assets/uplot/`.
pub(crate) const UPLOT_JS: &str = include_str!("../../assets/uplot/uPlot.iife.min.js");
/// uPlot's styles.
pub(crate) const UPLOT_CSS: &str = include_str!("../../assets/uplot/uPlot.min.css");

/// A static file by name: `(content type, body)`.
pub(crate) fn by_name(name: &str) -> Option<(&'static str, &'static str)> {
    const JS: &str = "text/javascript; charset=utf-8";
    const CSS: &str = "text/css; charset=utf-8";
    Some(match name {
        "console.js" => (JS, CONSOLE_JS),
        "charts.js" => (JS, CHARTS_JS),
        "uPlot.iife.min.js" => (JS, UPLOT_JS),
        "demo.css" => (CSS, DEMO_CSS),
        "uPlot.min.css" => (CSS, UPLOT_CSS),
        _ => return None,
    })
}
