//! `--report FILE.html`: the run as one self-contained HTML file. uPlot, the
//! chart helpers, the styles and the run's data are inlined; the file makes no
//! request of any kind.

use std::path::Path;

use serde::Serialize;

use crate::cells::CellEvent;
use crate::error::DemoError;
use crate::report::Report;
use crate::stats::Series;
use crate::ui::assets;

const TEMPLATE: &str = include_str!("../assets/report.html");
const REPORT_JS: &str = include_str!("../assets/report.js");

/// The data the page renders (`#report-data`).
#[derive(Debug, Serialize)]
struct Data<'a> {
    report: &'a Report,
    series: &'a Series,
    events: &'a [CellEvent],
}

/// Fills the template's `/*NAME*/` markers in one pass (inserted text is never
/// scanned for markers again).
fn fill(template: &str, parts: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + parts.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    while let Some((at, marker, value)) =
        parts.iter().filter_map(|(m, v)| rest.find(m).map(|at| (at, *m, *v))).min_by_key(|(at, _, _)| *at)
    {
        out.push_str(&rest[..at]);
        out.push_str(value);
        rest = &rest[at + marker.len()..];
    }
    out.push_str(rest);
    out
}

/// The report page.
pub(crate) fn render(report: &Report, series: &Series, events: &[CellEvent]) -> Result<String, DemoError> {
    let json = serde_json::to_string(&Data { report, series, events }).map_err(|e| DemoError::Other(e.to_string()))?;
    // inside <script>: no "</" may close the element early
    let json = json.replace("</", "<\\/");
    Ok(fill(
        TEMPLATE,
        &[
            ("/*UPLOT_CSS*/", assets::UPLOT_CSS),
            ("/*DEMO_CSS*/", assets::DEMO_CSS),
            ("/*DATA*/", &json),
            ("/*UPLOT_JS*/", assets::UPLOT_JS),
            ("/*CHARTS_JS*/", assets::CHARTS_JS),
            ("/*REPORT_JS*/", REPORT_JS),
        ],
    ))
}

/// Writes the report page to `path`.
pub(crate) fn write(path: &Path, report: &Report, series: &Series, events: &[CellEvent]) -> Result<(), DemoError> {
    std::fs::write(path, render(report, series, events)?)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn fill_replaces_each_marker_once_and_never_inside_inserted_text() {
        let got = fill("a /*X*/ b /*Y*/ c", &[("/*X*/", "[/*Y*/]"), ("/*Y*/", "y")]);
        assert_eq!(got, "a [/*Y*/] b y c");
    }
}
