//! Finding and reading recorded event files: plain or gzipped, CloudTrail
//! `{"Records": [...]}` documents or one event per line.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use stepgate_core::Timestamp;

use crate::event::Event;
use crate::{cloudtrail, jsonl};

/// Input formats of `stepgate replay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    CloudTrail,
    Jsonl,
}

/// Something that could not be replayed, with where it was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skip {
    /// File name, with the record number or line when the rest was read.
    pub place: String,
    pub reason: String,
    /// True for a well-formed record that is not a request (an
    /// administrative audit record): counted apart, not an error.
    #[serde(skip)]
    pub not_a_request: bool,
}

impl Skip {
    /// Creates the skip of something that could not be read or replayed.
    pub fn unreadable(place: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            place: place.into(),
            reason: reason.into(),
            not_a_request: false,
        }
    }
}

/// File name endings read when walking a directory.
const EVENT_FILE_ENDINGS: &[&str] = &[".json", ".jsonl", ".ndjson", ".log", ".gz"];

/// Largest CloudTrail document read whole, after decompression. AWS writes
/// files of a few megabytes; a larger one is skipped, not loaded.
pub const MAX_DOCUMENT_BYTES: u64 = 256 * 1024 * 1024;

/// Maximum length of a line read. A longer one is skipped without being
/// kept in memory.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Bytes looked at to tell a document from one event per line.
const PEEK_BYTES: usize = 64 * 1024;

/// The files under `paths` in replay order, and what could not be read.
#[derive(Debug, Default)]
pub struct Discovered {
    pub files: Vec<PathBuf>,
    pub skipped: Vec<Skip>,
}

/// Lists the files under `paths`: files as given, directories walked once
/// each (a symbolic link back to a directory already walked is left out),
/// keeping files that end in `.json`, `.jsonl`, `.ndjson`, `.log` or `.gz`.
/// The files are ordered by the time of their first event, then their path,
/// so that events arrive roughly in time order. The time in a CloudTrail
/// file name (`..._20240301T1005Z_...`) is used as its first event's.
///
/// A path given on the command line that cannot be read is an error;
/// unreadable entries below it are skipped.
pub fn discover(paths: &[PathBuf], format: Format) -> Result<Discovered, (PathBuf, io::Error)> {
    let mut found = Discovered::default();
    let mut walked = HashSet::new();
    for path in paths {
        let metadata = std::fs::metadata(path).map_err(|err| (path.to_owned(), err))?;
        if metadata.is_dir() {
            walk(path, &mut walked, &mut found);
        } else {
            found.files.push(path.to_owned());
        }
    }
    let mut keyed: Vec<(i64, PathBuf)> = found
        .files
        .drain(..)
        .map(|path| {
            (
                start_time(&path, format).map_or(i64::MAX, Timestamp::as_millis),
                path,
            )
        })
        .collect();
    keyed.sort();
    found.files = keyed.into_iter().map(|(_, path)| path).collect();
    Ok(found)
}

fn walk(dir: &Path, walked: &mut HashSet<PathBuf>, found: &mut Discovered) {
    let canonical = match std::fs::canonicalize(dir) {
        Ok(canonical) => canonical,
        Err(err) => {
            found.skipped.push(Skip::unreadable(
                dir.display().to_string(),
                format!("cannot read directory: {err}"),
            ));
            return;
        }
    };
    if !walked.insert(canonical) {
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            found.skipped.push(Skip::unreadable(
                dir.display().to_string(),
                format!("cannot read directory: {err}"),
            ));
            return;
        }
    };
    let mut entries: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    entries.sort();
    for entry in entries {
        let name = entry
            .file_name()
            .map(|name| name.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if entry.is_dir() {
            walk(&entry, walked, found);
        } else if EVENT_FILE_ENDINGS
            .iter()
            .any(|ending| name.ends_with(ending))
        {
            found.files.push(entry);
        }
    }
}

/// Finds the `YYYYMMDDTHHMMZ` stamp in a CloudTrail file name.
fn name_time(name: &str) -> Option<Timestamp> {
    let bytes = name.as_bytes();
    (0..bytes.len().saturating_sub(13)).find_map(|start| {
        let part = bytes.get(start..start + 14)?;
        let digits = |range: std::ops::Range<usize>| part[range].iter().all(u8::is_ascii_digit);
        if !(digits(0..8) && part[8] == b'T' && digits(9..13) && part[13] == b'Z') {
            return None;
        }
        let text = String::from_utf8_lossy(part);
        let stamp = format!(
            "{}-{}-{}T{}:{}:00Z",
            &text[0..4],
            &text[4..6],
            &text[6..8],
            &text[9..11],
            &text[11..13]
        );
        Timestamp::parse_rfc3339(&stamp)
    })
}

/// Returns when a file's events start: the time in its CloudTrail name, or
/// the time of the first event on its first line.
fn start_time(path: &Path, format: Format) -> Option<Timestamp> {
    let name = path.file_name()?.to_string_lossy();
    if let Some(time) = name_time(&name) {
        return Some(time);
    }
    let mut reader = open(path).ok()?;
    let peek = reader.fill_buf().ok()?;
    let end = peek.iter().position(|b| *b == b'\n').unwrap_or(peek.len());
    let line = std::str::from_utf8(&peek[..end]).ok()?.trim();
    let event = match format {
        Format::CloudTrail => cloudtrail::parse_record(line).ok()?.ok()?,
        Format::Jsonl => jsonl::parse_line(line).ok()?.ok()?,
    };
    Some(event.time)
}

/// Opens a file, decompressing it when it starts with the gzip magic and
/// dropping a UTF-8 byte order mark.
fn open(path: &Path) -> io::Result<Box<dyn BufRead>> {
    let mut file = BufReader::new(File::open(path)?);
    let gzipped = file.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn BufRead> = if gzipped {
        Box::new(BufReader::with_capacity(
            256 * 1024,
            MultiGzDecoder::new(file),
        ))
    } else {
        Box::new(BufReader::with_capacity(256 * 1024, file))
    };
    if reader.fill_buf()?.starts_with(b"\xef\xbb\xbf") {
        reader.consume(3);
    }
    Ok(reader)
}

#[derive(Deserialize)]
struct RecordsDocument<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<&'a RawValue>,
}

/// True when `start` (the first bytes of a file) opens a
/// `{"Records": ...}` document rather than a line of its own.
fn is_records_document(start: &[u8]) -> bool {
    let mut rest = start.iter().skip_while(|b| b.is_ascii_whitespace());
    if rest.next() != Some(&b'{') {
        return false;
    }
    let rest: Vec<u8> = rest
        .skip_while(|b| b.is_ascii_whitespace())
        .take(9)
        .copied()
        .collect();
    rest == b"\"Records\""
}

/// True when the first line of `peek` is not a JSON value by itself, as in
/// a pretty-printed document.
fn first_line_incomplete(peek: &[u8]) -> bool {
    let Some(end) = peek.iter().position(|b| *b == b'\n') else {
        return false;
    };
    let line = &peek[..end];
    line.iter().any(|b| !b.is_ascii_whitespace())
        && serde_json::from_slice::<serde::de::IgnoredAny>(line).is_err()
}

/// Reads every event of one file, handing events to `event` and whatever
/// cannot be read to `skip`.
pub fn read_file(
    path: &Path,
    format: Format,
    event: &mut dyn FnMut(Event),
    skip: &mut dyn FnMut(Skip),
) {
    let name = path.display().to_string();
    let unreadable = |err: io::Error| Skip::unreadable(name.clone(), format!("cannot read: {err}"));
    let mut reader = match open(path) {
        Ok(reader) => reader,
        Err(err) => return skip(unreadable(err)),
    };
    let peek = match fill_peek(&mut reader) {
        Ok(peek) => peek,
        Err(err) => return skip(unreadable(err)),
    };
    let document = format == Format::CloudTrail
        && (is_records_document(&peek) || first_line_incomplete(&peek));
    if document {
        let mut bytes = Vec::new();
        if let Err(err) = reader.take(MAX_DOCUMENT_BYTES + 1).read_to_end(&mut bytes) {
            return skip(unreadable(err));
        }
        if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
            return skip(Skip::unreadable(
                name,
                format!(
                    "document larger than {} MiB; split it or write one record per line",
                    MAX_DOCUMENT_BYTES / (1024 * 1024)
                ),
            ));
        }
        match String::from_utf8(bytes) {
            Ok(text) => read_documents(&name, &text, event, skip),
            Err(err) => skip(Skip::unreadable(name, format!("not UTF-8 text: {err}"))),
        }
    } else {
        read_lines(&name, reader, format, event, skip);
    }
}

/// Fills the reader's buffer with up to [`PEEK_BYTES`] without consuming.
fn fill_peek(reader: &mut Box<dyn BufRead>) -> io::Result<Vec<u8>> {
    let peek = reader.fill_buf()?;
    Ok(peek[..peek.len().min(PEEK_BYTES)].to_vec())
}

/// Reads one or more `{"Records": [...]}` documents written one after the
/// other, as concatenated files are.
fn read_documents(
    name: &str,
    text: &str,
    event: &mut dyn FnMut(Event),
    skip: &mut dyn FnMut(Skip),
) {
    let mut documents = serde_json::Deserializer::from_str(text).into_iter::<RecordsDocument<'_>>();
    let mut count = 0;
    loop {
        let document = match documents.next() {
            None => return,
            Some(Ok(document)) => document,
            Some(Err(err)) => {
                return skip(Skip::unreadable(
                    name.to_owned(),
                    format!("not a valid CloudTrail file: {err}"),
                ));
            }
        };
        for raw in &document.records {
            count += 1;
            read_record(raw.get(), || format!("{name} record {count}"), event, skip);
        }
    }
}

/// Reads one CloudTrail record, handing it to `event` or, with the place
/// `place` names, to `skip`.
fn read_record(
    text: &str,
    place: impl FnOnce() -> String,
    event: &mut dyn FnMut(Event),
    skip: &mut dyn FnMut(Skip),
) {
    match cloudtrail::parse_record(text) {
        Ok(Ok(parsed)) => event(parsed),
        Ok(Err(err)) => skip(Skip::unreadable(place(), err.to_string())),
        Err(err) => skip(Skip::unreadable(
            place(),
            format!("not a CloudTrail record: {err}"),
        )),
    }
}

/// Reads the next line into `line` (without its end) and returns false at
/// the end of the input. A line longer than [`MAX_LINE_BYTES`] is consumed
/// without being kept, and `too_long` is set.
fn next_line(
    reader: &mut Box<dyn BufRead>,
    line: &mut Vec<u8>,
    too_long: &mut bool,
) -> io::Result<bool> {
    line.clear();
    *too_long = false;
    let mut read_any = false;
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(read_any);
        }
        read_any = true;
        let (chunk, done) = match buffer.iter().position(|b| *b == b'\n') {
            Some(end) => (&buffer[..end], Some(end + 1)),
            None => (buffer, None),
        };
        if !*too_long && line.len() + chunk.len() <= MAX_LINE_BYTES {
            line.extend_from_slice(chunk);
        } else {
            *too_long = true;
            line.clear();
        }
        let used = done.unwrap_or(buffer.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(true);
        }
    }
}

fn read_lines(
    name: &str,
    mut reader: Box<dyn BufRead>,
    format: Format,
    event: &mut dyn FnMut(Event),
    skip: &mut dyn FnMut(Skip),
) {
    let mut line = Vec::new();
    let mut too_long = false;
    let mut number = 0_u64;
    loop {
        number += 1;
        let place = || format!("{name} line {number}");
        match next_line(&mut reader, &mut line, &mut too_long) {
            Ok(false) => return,
            Ok(true) => {}
            Err(err) => {
                return skip(Skip::unreadable(place(), format!("cannot read: {err}")));
            }
        }
        if too_long {
            skip(Skip::unreadable(
                place(),
                format!("line longer than {} MiB", MAX_LINE_BYTES / (1024 * 1024)),
            ));
            continue;
        }
        let text = match std::str::from_utf8(&line) {
            Ok(text) => text.trim(),
            Err(err) => {
                skip(Skip::unreadable(place(), format!("not UTF-8 text: {err}")));
                continue;
            }
        };
        if text.is_empty() {
            continue;
        }
        match format {
            Format::CloudTrail if text.contains("\"Records\"") && text.starts_with('{') => {
                read_documents(&place(), text, event, skip);
            }
            Format::CloudTrail => read_record(text, place, event, skip),
            Format::Jsonl => match jsonl::parse_line(text) {
                Ok(Ok(parsed)) => event(parsed),
                Ok(Err(err)) => skip(Skip {
                    place: place(),
                    reason: err.to_string(),
                    not_a_request: matches!(err, jsonl::LineError::NotARequest { .. }),
                }),
                Err(err) => skip(Skip::unreadable(
                    place(),
                    format!("not a JSON object: {err}"),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudtrail_names_sort_by_their_time() {
        assert_eq!(
            name_time("111122223333_CloudTrail_us-east-1_20240301T1005Z_abc.json.gz"),
            Timestamp::parse_rfc3339("2024-03-01T10:05:00Z")
        );
        assert_eq!(name_time("events.jsonl"), None);
    }

    #[test]
    fn records_documents_are_told_from_lines() {
        assert!(is_records_document(b"{\"Records\": ["));
        assert!(is_records_document(b"\n  {\n  \"Records\": ["));
        assert!(!is_records_document(b"{\"eventVersion\":\"1.08\"}"));
        assert!(!is_records_document(b"[]"));
        assert!(first_line_incomplete(b"{\n  \"eventVersion\": 1\n}\n"));
        assert!(!first_line_incomplete(
            b"{\"eventVersion\": 1}\n{\"a\": 2}\n"
        ));
    }

    fn read_all(path: &Path, format: Format) -> (Vec<Event>, Vec<Skip>) {
        let mut events = Vec::new();
        let mut skips = Vec::new();
        read_file(path, format, &mut |event| events.push(event), &mut |skip| {
            skips.push(skip)
        });
        (events, skips)
    }

    const RECORD: &str = r#"{"userIdentity":{"arn":"arn:aws:iam::1:user/u"},"eventTime":"2024-03-01T10:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","eventID":"@"}"#;

    #[test]
    fn invalid_utf8_skips_only_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut bytes = Vec::new();
        for i in 0..3 {
            bytes.extend_from_slice(RECORD.replace('@', &format!("a{i}")).as_bytes());
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(b"{\"eventID\": \"\xff\"}\n");
        for i in 0..5 {
            bytes.extend_from_slice(RECORD.replace('@', &format!("b{i}")).as_bytes());
            bytes.push(b'\n');
        }
        std::fs::write(&path, bytes).unwrap();
        let (events, skips) = read_all(&path, Format::CloudTrail);
        assert_eq!(events.len(), 8);
        assert_eq!(skips.len(), 1);
        assert!(skips[0].place.ends_with("line 4"), "{skips:?}");
        assert!(skips[0].reason.starts_with("not UTF-8 text"), "{skips:?}");
    }

    #[test]
    fn long_lines_are_skipped_without_keeping_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut bytes = vec![b' '; MAX_LINE_BYTES + 10];
        bytes.push(b'\n');
        bytes.extend_from_slice(RECORD.as_bytes());
        std::fs::write(&path, bytes).unwrap();
        let (events, skips) = read_all(&path, Format::CloudTrail);
        assert_eq!(events.len(), 1);
        assert_eq!(skips.len(), 1);
        assert!(skips[0].reason.starts_with("line longer than 16 MiB"));
    }

    #[test]
    fn concatenated_documents_bom_and_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trail.json");
        let one = format!("{{\"Records\": [{}]}}", RECORD.replace('@', "one"));
        let two = format!(
            "{{\n  \"Other\": 1,\n  \"Records\": [{}]\n}}\n",
            RECORD.replace('@', "two")
        );
        std::fs::write(&path, format!("\u{feff}{one}\n{two}")).unwrap();
        let (events, skips) = read_all(&path, Format::CloudTrail);
        assert_eq!(skips, vec![]);
        let ids: Vec<&str> = events.iter().map(|event| event.event_id.as_str()).collect();
        assert_eq!(ids, ["one", "two"]);
    }

    #[test]
    fn directories_walked_once_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a");
        std::fs::create_dir(&sub).unwrap();
        let later = RECORD.replace("10:00:00", "12:00:00");
        std::fs::write(sub.join("events-10.jsonl"), format!("{later}\n")).unwrap();
        std::fs::write(sub.join("events-9.jsonl"), format!("{RECORD}\n")).unwrap();
        std::fs::write(sub.join("notes.txt"), "not events").unwrap();
        std::os::unix::fs::symlink(".", sub.join("loop")).unwrap();
        std::os::unix::fs::symlink("..", sub.join("up")).unwrap();
        let found = discover(&[dir.path().to_owned()], Format::CloudTrail).unwrap();
        let names: Vec<String> = found
            .files
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["events-9.jsonl", "events-10.jsonl"]);
        assert!(found.skipped.is_empty());
    }
}
