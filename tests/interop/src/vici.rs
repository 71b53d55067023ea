//! A minimal client of charon's vici protocol (strongSwan's `src/libcharon/plugins/vici/
//! README.md`): requests, and the events some of them stream, over a UNIX socket.
//!
//! The harness talks vici itself instead of running `swanctl` for each query: in the
//! VM's emulated CPU, starting `swanctl` (and its crypto plugins) costs over a second,
//! and tests poll SA state often. `swanctl` still loads the configuration, which it
//! is there for.
//!
//! Wire format: each packet is a 32-bit big-endian length, then the packet: a type
//! byte, a name (8-bit length, then ASCII) for named types, then the message. A message
//! is a sequence of elements: section start (named), section end, key/value (named,
//! value with a 16-bit length), list start (named), list item (16-bit length), list end.

use crate::error;
use crate::sa::{Item, Section};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const CMD_REQUEST: u8 = 0;
const CMD_RESPONSE: u8 = 1;
const CMD_UNKNOWN: u8 = 2;
const EVENT_REGISTER: u8 = 3;
const EVENT_UNREGISTER: u8 = 4;
const EVENT_CONFIRM: u8 = 5;
const EVENT_UNKNOWN: u8 = 6;
const EVENT: u8 = 7;

const SECTION_START: u8 = 1;
const SECTION_END: u8 = 2;
const KEY_VALUE: u8 = 3;
const LIST_START: u8 = 4;
const LIST_ITEM: u8 = 5;
const LIST_END: u8 = 6;

/// vici's limit on one packet.
const MAX_PACKET: usize = 512 * 1024;

/// A message to send: `key = value` pairs (all charon's requests here need).
pub(crate) fn message(pairs: &[(&str, &str)]) -> Section {
    Section {
        items: pairs.iter().map(|&(k, v)| (k.to_owned(), Item::Value(v.to_owned()))).collect(),
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) -> io::Result<()> {
    let len = u8::try_from(name.len()).map_err(|_| error(format!("vici name too long: {name}")))?;
    out.push(len);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

fn put_value(out: &mut Vec<u8>, value: &str) -> io::Result<()> {
    let len = u16::try_from(value.len()).map_err(|_| error("vici value too long"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

/// Encodes the items of `section` (the message's root, or a section's body).
fn encode(section: &Section, out: &mut Vec<u8>) -> io::Result<()> {
    for (name, item) in &section.items {
        match item {
            Item::Value(v) => {
                out.push(KEY_VALUE);
                put_name(out, name)?;
                put_value(out, v)?;
            }
            Item::List(items) => {
                out.push(LIST_START);
                put_name(out, name)?;
                for v in items {
                    out.push(LIST_ITEM);
                    put_value(out, v)?;
                }
                out.push(LIST_END);
            }
            Item::Section(s) => {
                out.push(SECTION_START);
                put_name(out, name)?;
                encode(s, out)?;
                out.push(SECTION_END);
            }
        }
    }
    Ok(())
}

/// Reads one message, the rest of a packet.
pub(crate) fn decode(mut data: &[u8]) -> io::Result<Section> {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> io::Result<&'a [u8]> {
        if data.len() < n {
            return Err(error("truncated vici message"));
        }
        let (head, tail) = data.split_at(n);
        *data = tail;
        Ok(head)
    }
    fn name(data: &mut &[u8]) -> io::Result<String> {
        let len = take(data, 1)?[0];
        Ok(String::from_utf8_lossy(take(data, len.into())?).into_owned())
    }
    fn value(data: &mut &[u8]) -> io::Result<String> {
        let len = take(data, 2)?;
        let len = u16::from_be_bytes([len[0], len[1]]);
        Ok(String::from_utf8_lossy(take(data, len.into())?).into_owned())
    }
    // Open sections, innermost last; the root is the first.
    let mut stack: Vec<(String, Section)> = vec![(String::new(), Section::default())];
    let mut list: Option<(String, Vec<String>)> = None;
    while !data.is_empty() {
        let kind = take(&mut data, 1)?[0];
        let top = &mut stack.last_mut().ok_or_else(|| error("unbalanced vici message"))?.1;
        match (kind, list.as_mut()) {
            (LIST_ITEM, Some((_, items))) => items.push(value(&mut data)?),
            (LIST_END, Some(_)) => {
                let (key, items) = list.take().ok_or_else(|| error("unbalanced vici list"))?;
                top.items.push((key, Item::List(items)));
            }
            (_, Some(_)) => return Err(error(format!("vici element {kind} inside a list"))),
            (SECTION_START, None) => {
                let n = name(&mut data)?;
                stack.push((n, Section::default()));
            }
            (SECTION_END, None) => {
                if stack.len() < 2 {
                    return Err(error("unbalanced vici section end"));
                }
                let (n, done) = stack.pop().ok_or_else(|| error("unbalanced vici message"))?;
                let parent = &mut stack.last_mut().ok_or_else(|| error("unbalanced"))?.1;
                parent.items.push((n, Item::Section(done)));
            }
            (KEY_VALUE, None) => {
                let k = name(&mut data)?;
                let v = value(&mut data)?;
                top.items.push((k, Item::Value(v)));
            }
            (LIST_START, None) => list = Some((name(&mut data)?, Vec::new())),
            _ => return Err(error(format!("unknown vici element type {kind}"))),
        }
    }
    if stack.len() != 1 || list.is_some() {
        return Err(error("vici message ends inside a section or list"));
    }
    Ok(stack.pop().map(|(_, s)| s).unwrap_or_default())
}

/// One connection to charon's vici socket.
#[derive(Debug)]
pub(crate) struct Vici {
    stream: UnixStream,
}

impl Vici {
    /// Connects; every read and write may take at most `timeout`.
    pub(crate) fn connect(path: &Path, timeout: Duration) -> io::Result<Vici> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Vici { stream })
    }

    fn send(&mut self, kind: u8, name: &str, msg: Option<&Section>) -> io::Result<()> {
        let mut packet = vec![kind];
        put_name(&mut packet, name)?;
        if let Some(msg) = msg {
            encode(msg, &mut packet)?;
        }
        let len = u32::try_from(packet.len()).map_err(|_| error("vici packet too long"))?;
        let mut frame = len.to_be_bytes().to_vec();
        frame.extend_from_slice(&packet);
        self.stream.write_all(&frame)
    }

    /// Reads one packet: its type, name (empty for unnamed types) and message.
    fn recv(&mut self) -> io::Result<(u8, String, Vec<u8>)> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_PACKET {
            return Err(error(format!("bad vici packet length {len}")));
        }
        let mut packet = vec![0u8; len];
        self.stream.read_exact(&mut packet)?;
        let kind = packet[0];
        let mut rest = &packet[1..];
        let mut name = String::new();
        if kind == EVENT {
            let n = usize::from(*rest.first().ok_or_else(|| error("truncated vici event"))?);
            let bytes = rest.get(1..=n).ok_or_else(|| error("truncated vici event name"))?;
            name = String::from_utf8_lossy(bytes).into_owned();
            rest = &rest[1 + n..];
        }
        Ok((kind, name, rest.to_vec()))
    }

    fn register(&mut self, kind: u8, event: &str) -> io::Result<()> {
        self.send(kind, event, None)?;
        loop {
            match self.recv()? {
                (EVENT_CONFIRM, ..) => return Ok(()),
                (EVENT_UNKNOWN, ..) => return Err(error(format!("charon has no event {event}"))),
                (EVENT, ..) => {} // a straggler of an earlier registration
                (other, ..) => return Err(error(format!("vici: packet type {other} unexpected"))),
            }
        }
    }

    /// Sends request `cmd` and returns its response, collecting the events named
    /// `event` (if any) that charon streams while it works.
    pub(crate) fn request(
        &mut self,
        cmd: &str,
        msg: &Section,
        event: Option<&str>,
    ) -> io::Result<(Section, Vec<Section>)> {
        if let Some(event) = event {
            self.register(EVENT_REGISTER, event)?;
        }
        self.send(CMD_REQUEST, cmd, Some(msg))?;
        let mut events = Vec::new();
        let response = loop {
            match self.recv()? {
                (CMD_RESPONSE, _, body) => break decode(&body)?,
                (CMD_UNKNOWN, ..) => return Err(error(format!("charon has no command {cmd}"))),
                (EVENT, name, body) if Some(name.as_str()) == event => events.push(decode(&body)?),
                (EVENT, ..) => {}
                (other, ..) => return Err(error(format!("vici: packet type {other} unexpected"))),
            }
        };
        if let Some(event) = event {
            self.register(EVENT_UNREGISTER, event)?;
        }
        Ok((response, events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let inner = Section {
            items: vec![
                ("state".into(), Item::Value("ESTABLISHED".into())),
                ("local-ts".into(), Item::List(vec!["10.77.0.1/32".into(), "fd77::1/128".into()])),
                ("child-sas".into(), Item::Section(Section::default())),
            ],
        };
        let msg = Section {
            items: vec![
                ("peer".into(), Item::Section(inner)),
                ("success".into(), Item::Value("yes".into())),
            ],
        };
        let mut bytes = Vec::new();
        encode(&msg, &mut bytes).unwrap();
        assert_eq!(decode(&bytes).unwrap(), msg);
        // The README's own example: key1 = value1, section1 = { sub-section = { key2 =
        // value2 }, list1 = [ item1, item2 ] }.
        let example = b"\x03\x04key1\x00\x06value1\x01\x08section1\x01\x0bsub-section\
                        \x03\x04key2\x00\x06value2\x02\x04\x05list1\x05\x00\x05item1\
                        \x05\x00\x05item2\x06\x02";
        let parsed = decode(example).unwrap();
        assert_eq!(parsed.value("key1"), Some("value1"));
        let s1 = parsed.section("section1").unwrap();
        assert_eq!(s1.section("sub-section").unwrap().value("key2"), Some("value2"));
        assert_eq!(s1.list("list1"), ["item1", "item2"]);
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(decode(&[SECTION_END]).is_err());
        assert!(decode(&[SECTION_START, 1, b'a']).is_err());
        assert!(decode(&[KEY_VALUE, 1, b'k', 0, 5, b'v']).is_err());
        assert!(decode(&[LIST_START, 1, b'l', KEY_VALUE]).is_err());
    }
}
