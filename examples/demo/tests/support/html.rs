//! Checks on an HTML page: that it loads nothing from outside, and the JSON
//! it embeds.

/// The page with the bodies of its `<script>` and `<style>` elements left
/// out (their tags kept): the markup whose attributes the browser follows.
fn markup_only(page: &str) -> String {
    let lower = page.to_ascii_lowercase();
    let mut out = String::new();
    let mut i = 0;
    loop {
        let next = ["<script", "<style"].into_iter().filter_map(|t| lower[i..].find(t).map(|p| (i + p, t))).min();
        let Some((at, tag)) = next else {
            out.push_str(&page[i..]);
            return out;
        };
        let body = at + lower[at..].find('>').expect("an unclosed tag") + 1;
        out.push_str(&page[i..body]);
        let close = format!("</{}", &tag[1..]);
        i = body + lower[body..].find(&close).unwrap_or_else(|| panic!("{tag} is never closed"));
    }
}

/// Every value of a `src=` or `href=` in `text` (quoted or not).
fn references(text: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let mut out = Vec::new();
    for attr in ["src=", "href="] {
        for (at, _) in lower.match_indices(attr) {
            let rest = text[at + attr.len()..].trim_start();
            let value = match rest.chars().next() {
                Some(q @ ('"' | '\'')) => rest[1..].split(q).next().unwrap_or_default(),
                _ => rest.split(|c: char| c.is_whitespace() || c == '>').next().unwrap_or_default(),
            };
            out.push(value.to_string());
        }
    }
    out
}

fn external(reference: &str) -> bool {
    let r = reference.trim().to_ascii_lowercase();
    r.starts_with("http:") || r.starts_with("https:") || r.starts_with("//") || r.starts_with("file:")
}

/// Fails unless `page` references nothing outside itself: its markup has no
/// `src`/`href` but in-page anchors and `data:` URLs, no script or style
/// anywhere names an external URL in a `src=`/`href=`, and no `@import` or
/// `url(...)` points outside.
pub(crate) fn assert_self_contained(page: &str) {
    let markup = markup_only(page);
    for r in references(&markup) {
        assert!(r.starts_with('#') || r.starts_with("data:"), "the markup references {r:?}");
    }
    for r in references(page) {
        assert!(!external(&r), "the page references {r:?}");
    }
    let lower = page.to_ascii_lowercase();
    assert!(!lower.contains("@import"), "an @import");
    for (at, _) in lower.match_indices("url(") {
        let arg = lower[at + 4..].trim_start_matches(['"', '\'', ' ']);
        assert!(!external(arg), "a url() to {}", &arg[..arg.len().min(60)]);
    }
}

/// The JSON in the page's `<script type="application/json" id="{id}">`.
pub(crate) fn embedded_json(page: &str, id: &str) -> serde_json::Value {
    let open = format!("<script type=\"application/json\" id=\"{id}\">");
    let start = page.find(&open).unwrap_or_else(|| panic!("no {open}")) + open.len();
    let len = page[start..].find("</script>").expect("the data script is closed");
    serde_json::from_str(&page[start..start + len]).expect("the embedded data is JSON")
}

#[test]
fn the_checks_catch_external_references() {
    let ok = "<html><style>a{}</style><a href=\"#x\">x</a><script>var a = '<a href=x>';</script></html>";
    assert_self_contained(ok);
    for bad in [
        "<script src=\"https://cdn.example/x.js\"></script>",
        "<link rel=stylesheet href=//cdn.example/x.css>",
        "<style>@import url(\"x.css\");</style>",
        "<style>body{background:url(https://example.com/a.png)}</style>",
        "<script>img.src='http://example.com/a.png'</script>",
        "<img src=\"a.png\">",
    ] {
        assert!(std::panic::catch_unwind(|| assert_self_contained(bad)).is_err(), "{bad} passed");
    }
}
