//! The status page's HTML, rendered by pure functions from plain data:
//! escaping, times in UTC with a relative hint, the status line of a
//! subscription, and the pages themselves. No script, no external asset;
//! the one stylesheet is served by ingest itself.

use chrono::{DateTime, Utc};
use std::fmt::Write;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// "3 min ago" / "in 2 h" / "just now" for `t` seen at `now`.
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (n, future) = (secs.unsigned_abs(), secs < 0);
    let amount = match n {
        0..=4 => return "just now".to_string(),
        5..=59 => format!("{n} s"),
        60..=3599 => format!("{} min", n / 60),
        3600..=86_399 => format!("{} h", n / 3600),
        _ => format!("{} d", n / 86_400),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// A time in UTC with its relative hint, as HTML.
pub fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{} UTC</time> <span class=\"rel\">({})</span>",
        t.to_rfc3339(),
        t.format("%Y-%m-%d %H:%M:%S"),
        relative(t, now)
    )
}

/// An RFC 3339 text as [`when`], or a dash when absent or unreadable.
pub fn when_text(text: Option<&str>, now: DateTime<Utc>) -> String {
    text.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| when(t.with_timezone(&Utc), now))
        .unwrap_or_else(|| "—".to_string())
}

/// What the page knows about one subscription.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionRow {
    /// Id.
    pub id: String,
    /// Tenant, when it has one.
    pub tenant: Option<String>,
    /// Endpoint.
    pub endpoint: String,
    /// Event type patterns.
    pub event_types: Vec<String>,
    /// `active`, `paused` or `disabled`.
    pub status: String,
    /// Why it is disabled, when it is.
    pub disabled_reason: Option<String>,
    /// When it was disabled.
    pub disabled_at: Option<DateTime<Utc>>,
    /// The block, when it waits on a failing event: (since, next attempt, last error).
    pub blocked: Option<(DateTime<Utc>, DateTime<Utc>, String)>,
    /// Events waiting in its queue (`None`: broker unreachable).
    pub backlog: Option<u32>,
    /// Last success.
    pub last_success_at: Option<String>,
    /// Last failure.
    pub last_failure_at: Option<String>,
    /// Last error.
    pub last_error: Option<String>,
    /// Deliveries in the last hour (from the recent attempts).
    pub delivered_hour: usize,
    /// Deliveries in the last day (from the recent attempts).
    pub delivered_day: usize,
    /// Parked events.
    pub parked: usize,
}

/// The one-word status and its detail (HTML) of a subscription.
pub fn status_line(row: &SubscriptionRow, now: DateTime<Utc>) -> (&'static str, String) {
    match row.status.as_str() {
        "disabled" => (
            "disabled",
            format!(
                "disabled {}: {}",
                row.disabled_at.map(|t| when(t, now)).unwrap_or_default(),
                escape(row.disabled_reason.as_deref().unwrap_or("given up"))
            ),
        ),
        "paused" => ("paused", "paused: events wait in the queue".to_string()),
        _ => match &row.blocked {
            Some((since, next, error)) => (
                "blocked",
                format!(
                    "blocked since {} · next attempt {} · {}",
                    when(*since, now),
                    when(*next, now),
                    escape(error)
                ),
            ),
            None => ("active", "active".to_string()),
        },
    }
}

/// Who is signed in, for the page header.
pub struct Viewer<'a> {
    /// `operator` or the tenant's id.
    pub label: &'a str,
    /// The session's CSRF token, for the sign-out form.
    pub csrf: &'a str,
}

/// A whole page around `body`.
pub fn page(title: &str, viewer: Option<&Viewer<'_>>, body: &str) -> String {
    let mut header = String::new();
    if let Some(viewer) = viewer {
        let _ = write!(
            header,
            "<div class=\"who\">Signed in as <strong id=\"viewer\">{}</strong> \
             <form method=\"post\" action=\"/ui/logout\" class=\"inline\">{}\
             <button type=\"submit\">Sign out</button></form></div>",
            escape(viewer.label),
            csrf_field(viewer.csrf)
        );
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Postline</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head>\
         <body><header><a href=\"/ui/\" class=\"brand\">Postline</a>{header}</header>\
         <main><h1>{title}</h1>{body}</main></body></html>",
        title = escape(title),
    )
}

/// The hidden CSRF field of a form.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(csrf)
    )
}

/// A one-button form posting to `action`.
pub fn button(action: &str, label: &str, csrf: &str, extra: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\">{}{extra}<button type=\"submit\">{}</button></form>",
        escape(action),
        csrf_field(csrf),
        escape(label)
    )
}

/// The overview table of subscriptions.
pub fn subscriptions_table(
    rows: &[SubscriptionRow],
    show_tenant: bool,
    now: DateTime<Utc>,
) -> String {
    if rows.is_empty() {
        return "<p id=\"no-subscriptions\">No subscriptions.</p>".to_string();
    }
    let mut html = String::from("<table id=\"subscriptions\"><thead><tr><th>Subscription</th>");
    if show_tenant {
        html.push_str("<th>Tenant</th>");
    }
    html.push_str(
        "<th>Status</th><th>Backlog</th><th>Last success</th><th>Last failure</th>\
         <th>Delivered 1 h</th><th>Delivered 24 h</th></tr></thead><tbody>",
    );
    for row in rows {
        let (word, detail) = status_line(row, now);
        let id = escape(&row.id);
        let _ = write!(
            html,
            "<tr id=\"sub-{id}\" class=\"sub\"><td><a href=\"/ui/subscriptions/{id}\">{id}</a></td>"
        );
        if show_tenant {
            let _ = write!(
                html,
                "<td class=\"tenant\">{}</td>",
                escape(row.tenant.as_deref().unwrap_or("—"))
            );
        }
        let failure = match (&row.last_failure_at, &row.last_error) {
            (Some(at), Some(error)) => format!(
                "{}<br><span class=\"error\">{}</span>",
                when_text(Some(at), now),
                escape(error)
            ),
            (at, _) => when_text(at.as_deref(), now),
        };
        let _ = write!(
            html,
            "<td class=\"status status-{word}\" data-status=\"{word}\">{detail}</td>\
             <td class=\"backlog\">{}</td><td>{}</td><td>{failure}</td>\
             <td class=\"hour\">{}</td><td class=\"day\">{}</td></tr>",
            row.backlog.map_or("?".to_string(), |b| b.to_string()),
            when_text(row.last_success_at.as_deref(), now),
            row.delivered_hour,
            row.delivered_day,
        );
    }
    html.push_str("</tbody></table>");
    html
}

/// The stylesheet (served at `/ui/style.css`).
pub const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f8fa}\
header{display:flex;gap:1rem;align-items:center;justify-content:space-between;padding:.6rem 1.2rem;background:#1b1f24;color:#fff}\
header a{color:#fff;text-decoration:none;font-weight:bold}\
main{padding:1rem 1.2rem;max-width:80rem}\
table{border-collapse:collapse;width:100%;background:#fff}\
th,td{border:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}\
th{background:#eaeef2}\
.status-active{color:#1a7f37}.status-paused{color:#9a6700}.status-blocked,.status-disabled{color:#cf222e}\
.error{color:#cf222e}.rel{color:#57606a}\
.inline{display:inline;margin:0 .2rem}\
.notice{padding:.5rem;background:#ddf4ff;border:1px solid #54aeff}\
.refused{padding:.5rem;background:#ffebe9;border:1px solid #ff8182}\
form.signin{background:#fff;border:1px solid #d0d7de;padding:1rem;margin-bottom:1rem;max-width:30rem}\
form.signin label{display:block;margin:.4rem 0}\
form.signin input{width:100%}\
";

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn escapes_everything_that_could_open_markup() {
        assert_eq!(
            escape(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }

    #[test]
    fn times_read_relative_both_ways() {
        let now = Utc::now();
        assert_eq!(relative(now, now), "just now");
        assert_eq!(relative(now - Duration::seconds(30), now), "30 s ago");
        assert_eq!(relative(now - Duration::minutes(3), now), "3 min ago");
        assert_eq!(relative(now + Duration::hours(2), now), "in 2 h");
        assert_eq!(relative(now - Duration::days(3), now), "3 d ago");
        assert!(when(now, now).contains(" UTC</time>"));
        assert_eq!(when_text(Some("garbage"), now), "—");
    }

    #[test]
    fn the_status_line_says_blocked_paused_or_disabled_and_why() {
        let now = Utc::now();
        let mut row = SubscriptionRow {
            status: "active".into(),
            ..SubscriptionRow::default()
        };
        assert_eq!(status_line(&row, now).0, "active");
        row.blocked = Some((
            now,
            now + Duration::minutes(5),
            "receiver answered 503: <b>".into(),
        ));
        let (word, detail) = status_line(&row, now);
        assert_eq!(word, "blocked");
        assert!(detail.contains("in 5 min"), "{detail}");
        assert!(detail.contains("&lt;b&gt;"), "{detail}");
        row.status = "paused".into();
        assert_eq!(status_line(&row, now).0, "paused");
        row.status = "disabled".into();
        row.disabled_reason = Some("gave up after 7 days".into());
        let (word, detail) = status_line(&row, now);
        assert_eq!(word, "disabled");
        assert!(detail.contains("gave up after 7 days"));
    }

    #[test]
    fn tables_escape_ids_and_show_the_tenant_only_to_the_operator() {
        let now = Utc::now();
        let rows = [SubscriptionRow {
            id: "a<b".into(),
            tenant: Some("acme".into()),
            status: "active".into(),
            ..SubscriptionRow::default()
        }];
        let partner = subscriptions_table(&rows, false, now);
        assert!(partner.contains("a&lt;b") && !partner.contains("a<b"));
        assert!(!partner.contains("acme"));
        assert!(subscriptions_table(&rows, true, now).contains("acme"));
    }
}
