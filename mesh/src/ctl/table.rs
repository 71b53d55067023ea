//! The tables `meshctl` prints: pure functions from the [protocol types](crate::control::proto)
//! (and the time, where an age is shown) to text, so tests can check them.
//!
//! kubectl's habits: a header row in capitals, columns two spaces apart (one when the
//! table is crowded), `-` for nothing, about 80 columns by default (the last column, an
//! error, is cut to fit), everything with `wide`.

use crate::control::proto::{PeerEntry, PeerStatus, RolloutReport, Status};
use std::fmt::Write as _;
use std::net::IpAddr;

/// The width tables aim at by default.
pub const WIDTH: usize = 80;
/// A cut last column keeps at least this many characters, even past [`WIDTH`]: enough
/// to see that there is an error, `-o wide` shows it whole.
pub const MIN_LAST: usize = 8;

/// `meshctl status`: a header line (node, version, uptime, target, ESP), then one row
/// per peer. `now` is the time in seconds since the Unix epoch, for the REKEYED ages.
pub fn status(status: &Status, wide: bool, now: u64) -> String {
    let esp = if status.esp.available {
        "ESP: available".to_string()
    } else {
        match &status.esp.message {
            Some(message) => format!("ESP: unavailable: {message}"),
            None => "ESP: unavailable".to_string(),
        }
    };
    let mut out = format!(
        "node {}  meshd {}  up {}  target {}  {esp}\n",
        status.node,
        status.version,
        duration(status.uptime_seconds),
        status.target
    );
    let c = &status.counters;
    let _ = writeln!(
        out,
        "IKE: {} retransmitted, {} initiating, {} waiting, {} half-open\n\
         UDP: {} sent, {} deferred, {} lost, {} errors reported",
        c.retransmissions,
        c.initiating,
        c.waiting,
        c.half_open,
        c.sent,
        c.deferred,
        c.send_failed,
        c.errors_reported
    );
    let header = ["PEER", "ADDRESS", "LEVEL", "IKE", "CHILD", "IN", "OUT", "REKEYED", "ERROR"];
    let rows: Vec<Vec<String>> = status.peers.iter().map(|p| peer_row(p, wide, now)).collect();
    out.push_str(&render(&header, &rows, !wide));
    out
}

fn peer_row(peer: &PeerStatus, wide: bool, now: u64) -> Vec<String> {
    vec![
        peer.name.clone(),
        addresses(&peer.addresses, wide),
        peer.level.to_string(),
        peer.ike.clone(),
        peer.child
            .as_ref()
            .map_or_else(|| "-".into(), |c| format!("{:08x}/{:08x}", c.spi_in, c.spi_out)),
        bytes(peer.bytes_in),
        bytes(peer.bytes_out),
        peer.last_rekey.map_or_else(|| "-".into(), |t| age(t, now)),
        peer.last_error.as_deref().map_or_else(|| "-".into(), one_line),
    ]
}

/// `meshctl peer list`: NAME ADDRESSES SOURCE (every address, in both widths).
pub fn peers(peers: &[PeerEntry]) -> String {
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| vec![p.name.clone(), addresses(&p.addresses, true), p.source.clone()])
        .collect();
    render(&["NAME", "ADDRESSES", "SOURCE"], &rows, false)
}

/// `meshctl rollout status`: a header line with the mesh-wide target, then PEER TARGET
/// CURRENT ANNOUNCED BLOCKED-BY (the reason cut to fit unless `wide`).
pub fn rollout(report: &RolloutReport, wide: bool) -> String {
    let mut out = format!("mesh target {}\n", report.target);
    let rows: Vec<Vec<String>> = report
        .peers
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.target.to_string(),
                p.current.to_string(),
                p.announced.map_or_else(|| "-".into(), |l| l.to_string()),
                p.blocked.as_deref().map_or_else(|| "-".into(), one_line),
            ]
        })
        .collect();
    out.push_str(&render(&["PEER", "TARGET", "CURRENT", "ANNOUNCED", "BLOCKED-BY"], &rows, !wide));
    out
}

/// The answer to a change: one line per change, marked when it was a dry run; a line
/// saying so when nothing had to change.
pub fn changes(changes: &[String], dry_run: bool) -> String {
    let mut out = String::new();
    if changes.is_empty() {
        out.push_str(if dry_run {
            "nothing would change (dry run)\n"
        } else {
            "nothing to change\n"
        });
    }
    for change in changes {
        let _ = writeln!(out, "{}{}", one_line(change), if dry_run { " (dry run)" } else { "" });
    }
    out
}

/// Lays out `rows` under `header`, left-aligned, without trailing blanks, columns two
/// spaces apart. With `fit`, lines aim at [`WIDTH`] columns: if two spaces do not leave
/// the last column [`MIN_LAST`] characters, columns are one space apart, and the last
/// column is cut (ending in `...`) to what is left, keeping at least [`MIN_LAST`].
pub fn render(header: &[&str], rows: &[Vec<String>], fit: bool) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row).take(columns.saturating_sub(1)) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let fixed: usize = widths.iter().take(columns.saturating_sub(1)).sum();
    let gaps = columns.saturating_sub(1);
    let gap = if fit && fixed + 2 * gaps + MIN_LAST > WIDTH { 1 } else { 2 };
    let last_room = WIDTH.saturating_sub(fixed + gap * gaps).max(MIN_LAST);
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(columns) {
            if i + 1 == columns {
                line.push_str(&if fit { truncate(cell, last_room) } else { cell.clone() });
            } else {
                let _ = write!(line, "{cell:<width$}{:gap$}", "", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `text` cut to `max` characters, ending in `...` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max.saturating_sub(3)).collect();
    format!("{}...", kept.trim_end())
}

/// The first address, or all of them, comma-separated, if `all`; `-` for none.
pub fn addresses(addresses: &[IpAddr], all: bool) -> String {
    match addresses {
        [] => "-".into(),
        [first, ..] if !all => first.to_string(),
        many => many.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
    }
}

/// Bytes, short, in binary multiples (as `ls -h`): `512B`, `1.5K`, `23M`, `4.0G`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if n < 1024 {
        return format!("{n}B");
    }
    // Tenths of the unit, in integers: no float rounding surprises.
    let mut unit = 0;
    let mut scaled = u128::from(n) * 10 / 1024;
    while scaled >= 10_240 && unit + 1 < UNITS.len() {
        scaled /= 1024;
        unit += 1;
    }
    if scaled < 100 {
        format!("{}.{}{}", scaled / 10, scaled % 10, UNITS[unit])
    } else {
        format!("{}{}", scaled / 10, UNITS[unit])
    }
}

/// How long ago `then` was at `now` (both seconds since the epoch): `5s ago`, `5m ago`,
/// `3h ago`, `2d ago`; `just now` for a time not in the past.
pub fn age(then: u64, now: u64) -> String {
    if then >= now {
        return "just now".into();
    }
    format!("{} ago", duration(now - then))
}

/// A duration in its largest whole unit: `42s`, `5m`, `3h`, `2d`.
pub fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r', '\t'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_ages() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(1023), "1023B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(10 * 1024), "10K");
        assert_eq!(bytes(5 * 1024 * 1024 + 1), "5.0M");
        assert_eq!(bytes(u64::MAX), "15E");
        assert_eq!(age(100, 100), "just now");
        assert_eq!(age(0, 42), "42s ago");
        assert_eq!(age(0, 300), "5m ago");
        assert_eq!(age(0, 3 * 3600 + 5), "3h ago");
        assert_eq!(age(0, 2 * 86_400), "2d ago");
        assert_eq!(truncate("abcdef", 5), "ab...");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
