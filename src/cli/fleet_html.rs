//! `fleet --html FILE`: one self-contained page. The table rows are plain
//! HTML (readable without scripts), the data is embedded as JSON, and a
//! small inline script draws each row's 90-day strip on a canvas. Nothing
//! is fetched: no external scripts, styles, fonts or links.

use super::fleet::age_text;
use super::json::{Fleet, FleetRepo};
use anyhow::Result;
use std::fmt::Write;

/// The strip's width in pixels: 540 slots at six a day, one pixel each.
const STRIP_WIDTH: u32 = 540;

const STYLE: &str = "body{font:13px system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse}th,td{padding:2px 8px;text-align:left;white-space:nowrap}\
th{border-bottom:1px solid #999}tr.stale td{background:#fde0dc}tr.damaged td{background:#fff3cd}\
tr.disputed td,tr.unknown td{background:#eef}canvas{display:block}\
.k{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}\
.c{background:#2e7d32}.d{background:#c62828}.u{background:#78909c}.m{background:#f9a825}.n{background:#e0e0e0}";

/// Draws every strip from the embedded data; marks the body with how many
/// it drew, so a test can tell that the script ran.
const SCRIPT: &str = r##"(function () {
  var data = JSON.parse(document.getElementById("fleet-data").textContent);
  var colors = { c: "#2e7d32", d: "#c62828", u: "#78909c", m: "#f9a825", "-": "#e0e0e0" };
  var canvases = document.querySelectorAll("canvas[data-row]");
  var drawn = 0;
  for (var k = 0; k < canvases.length; k++) {
    var canvas = canvases[k];
    var row = data.repositories[Number(canvas.getAttribute("data-row"))];
    if (!row) continue;
    var cells = row.strip.cells;
    var w = canvas.width / cells.length;
    var g = canvas.getContext("2d");
    for (var i = 0; i < cells.length; i++) {
      g.fillStyle = colors[cells.charAt(i)] || "#000";
      g.fillRect(i * w, 0, Math.max(w, 1), canvas.height);
    }
    drawn++;
  }
  document.body.setAttribute("data-drawn", String(drawn));
})();"##;

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// JSON safe inside a `<script>` element: no `<` (so no `</script>`),
/// `>` or `&` in it; the escapes read back as the same strings.
pub fn embeddable_json(v: &impl serde::Serialize) -> Result<String> {
    Ok(serde_json::to_string(v)?
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026"))
}

/// The whole page.
pub fn page(fleet: &Fleet) -> Result<String> {
    let mut out = String::with_capacity(4096 + fleet.repositories.len() * 600);
    let title = format!("coffer fleet: {}", fleet.location);
    let stale = fleet.repositories.iter().filter(|r| r.stale).count();
    let damaged = fleet.repositories.iter().filter(|r| r.damaged).count();
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>{}</title><style>{STYLE}</style></head>\n<body>\n<h1>{}</h1>\n\
<p>{} repositories, {stale} stale, {damaged} damaged; generated {}{}.</p>\n\
<p>Last 90 days, one cell per schedule slot:<span class=\"k c\"></span>complete\
<span class=\"k d\"></span>damaged<span class=\"k u\"></span>stored (no status)\
<span class=\"k m\"></span>missing<span class=\"k n\"></span>none expected</p>\n",
        escape(&title),
        escape(&title),
        fleet.repositories.len(),
        escape(&fleet.generated),
        fleet
            .stale_after_seconds
            .map(|s| format!("; stale after {}", age_text(s)))
            .unwrap_or_default(),
    )?;
    out.push_str(
        "<table id=\"fleet\"><thead><tr><th>state</th><th>repository</th><th>hosts</th>\
<th>last complete</th><th>age</th><th>snapshots</th><th>stored</th><th>last 90 days</th></tr></thead>\n<tbody>\n",
    );
    for (i, r) in fleet.repositories.iter().enumerate() {
        row(&mut out, i, r)?;
    }
    write!(
        out,
        "</tbody></table>\n<script type=\"application/json\" id=\"fleet-data\">{}</script>\n\
<script>{SCRIPT}</script>\n</body></html>\n",
        embeddable_json(fleet)?
    )?;
    Ok(out)
}

fn row(out: &mut String, i: usize, r: &FleetRepo) -> std::fmt::Result {
    let hosts = match (r.hosts, r.hosts_sealed) {
        (Some(h), _) => h.join(", "),
        (None, true) => "sealed".into(),
        (None, false) => "-".into(),
    };
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    writeln!(
        out,
        "<tr class=\"{}\" data-repo=\"{}\" title=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
<td>{}</td><td>{}</td><td>{}</td><td><canvas data-row=\"{i}\" width=\"{STRIP_WIDTH}\" height=\"12\"></canvas></td></tr>",
        r.state,
        escape(r.repository),
        escape(&r.notes.join("\n")),
        r.state,
        escape(r.repository),
        escape(&hosts),
        escape(&or_dash(r.last_complete.clone())),
        or_dash(r.age_seconds.map(age_text)),
        r.snapshots,
        or_dash(r.stored_bytes.map(super::backup::human)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::json::FleetStrip;

    #[test]
    fn names_are_escaped_and_the_data_can_not_end_its_script() {
        let notes = vec!["</script><script>alert(1)</script>".to_string()];
        let fleet = Fleet {
            generated: "now".into(),
            location: "s3://b",
            repositories: vec![FleetRepo {
                age_seconds: Some(90_000),
                damage_records: None,
                damaged: false,
                damaged_snapshots: None,
                hosts: None,
                hosts_sealed: true,
                id: Some("i"),
                last_complete: None,
                newest_stored: None,
                notes: &notes,
                repository: "a<b>&\"c",
                snapshots: 3,
                stale: true,
                state: "stale",
                status_written: None,
                stored_bytes: Some(2048),
                strip: FleetStrip {
                    cells: "cdm-",
                    per_day: 6,
                    start: "s".into(),
                },
            }],
            stale_after_seconds: Some(36 * 3600),
            unlisted: Vec::new(),
        };
        let html = page(&fleet).unwrap();
        assert_eq!(html.matches("</script>").count(), 2, "{html}");
        assert!(html.contains("data-repo=\"a&lt;b&gt;&amp;&quot;c\""));
        assert!(html.contains("<td>sealed</td>"));
        assert!(html.contains("stale after 1d 12h"));
        assert!(!html.contains("http://") && !html.contains("https://"));
        // The embedded data reads back as the same strings.
        let start = html.find("id=\"fleet-data\">").unwrap() + "id=\"fleet-data\">".len();
        let end = start + html[start..].find("</script>").unwrap();
        let v: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(v["repositories"][0]["repository"], "a<b>&\"c");
        assert_eq!(v["repositories"][0]["notes"][0], notes[0]);
    }
}
