//! Finding and reading recorded event files: plain or gzipped, one
//! CloudTrail `{"Records": [...]}` document or one event per line.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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
}

/// File name endings read when walking a directory.
const EVENT_FILE_ENDINGS: &[&str] = &[".json", ".jsonl", ".ndjson", ".log", ".gz"];

/// Lists the files under `paths`: files as given, directories walked in
/// name order, keeping files that end in `.json`, `.jsonl`, `.ndjson`,
/// `.log` or `.gz`. Files are then sorted by the time in their CloudTrail name
/// (`..._20240301T1000Z_...`) when they have one, so that events arrive
/// roughly in time order.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, (PathBuf, io::Error)> {
    let mut files = Vec::new();
    for path in paths {
        collect(path, &mut files)?;
    }
    files.sort_by(|a, b| {
        let key = |path: &Path| {
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned());
            (
                name.as_deref().and_then(name_time).unwrap_or_default(),
                path.to_owned(),
            )
        };
        key(a).cmp(&key(b))
    });
    Ok(files)
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), (PathBuf, io::Error)> {
    let metadata = std::fs::metadata(path).map_err(|err| (path.to_owned(), err))?;
    if !metadata.is_dir() {
        files.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|err| (path.to_owned(), err))?
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
        if entry.is_dir()
            || EVENT_FILE_ENDINGS
                .iter()
                .any(|ending| name.ends_with(ending))
        {
            collect(&entry, files)?;
        }
    }
    Ok(())
}

/// Finds the `YYYYMMDDTHHMMZ` stamp in a CloudTrail file name.
fn name_time(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    (0..bytes.len().saturating_sub(13)).find_map(|start| {
        let part = bytes.get(start..start + 14)?;
        let digits = |range: std::ops::Range<usize>| part[range].iter().all(u8::is_ascii_digit);
        let fits = digits(0..8) && part[8] == b'T' && digits(9..13) && part[13] == b'Z';
        fits.then(|| String::from_utf8_lossy(part).into_owned())
    })
}

/// Opens a file, decompressing it when it starts with the gzip magic.
fn open(path: &Path) -> io::Result<Box<dyn BufRead>> {
    let mut file = BufReader::new(File::open(path)?);
    let gzipped = file.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzipped {
        Box::new(BufReader::with_capacity(
            256 * 1024,
            MultiGzDecoder::new(file),
        ))
    } else {
        Box::new(file)
    })
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

/// Reads every event of one file, handing events to `event` and whatever
/// cannot be read to `skip`.
pub fn read_file(
    path: &Path,
    format: Format,
    event: &mut dyn FnMut(Event),
    skip: &mut dyn FnMut(Skip),
) {
    let name = path.display().to_string();
    let mut reader = match open(path) {
        Ok(reader) => reader,
        Err(err) => {
            skip(Skip {
                place: name,
                reason: format!("cannot read: {err}"),
            });
            return;
        }
    };
    let start = match reader.fill_buf() {
        Ok(start) => start.to_vec(),
        Err(err) => {
            skip(Skip {
                place: name,
                reason: format!("cannot read: {err}"),
            });
            return;
        }
    };
    if format == Format::CloudTrail && is_records_document(&start) {
        let mut text = String::new();
        if let Err(err) = reader.read_to_string(&mut text) {
            skip(Skip {
                place: name,
                reason: format!("cannot read: {err}"),
            });
            return;
        }
        read_document(&name, &text, event, skip);
    } else {
        read_lines(&name, reader, format, event, skip);
    }
}

fn read_document(name: &str, text: &str, event: &mut dyn FnMut(Event), skip: &mut dyn FnMut(Skip)) {
    let document: RecordsDocument<'_> = match serde_json::from_str(text) {
        Ok(document) => document,
        Err(err) => {
            skip(Skip {
                place: name.to_owned(),
                reason: format!("not a valid CloudTrail file: {err}"),
            });
            return;
        }
    };
    for (index, raw) in document.records.iter().enumerate() {
        let place = || format!("{name} record {}", index + 1);
        match cloudtrail::parse_record(raw.get()) {
            Ok(Ok(parsed)) => event(parsed),
            Ok(Err(err)) => skip(Skip {
                place: place(),
                reason: err.to_string(),
            }),
            Err(err) => skip(Skip {
                place: place(),
                reason: format!("not a CloudTrail record: {err}"),
            }),
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
    let mut line = String::new();
    let mut number = 0_u64;
    loop {
        line.clear();
        number += 1;
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) => {
                skip(Skip {
                    place: format!("{name} line {number}"),
                    reason: format!("cannot read: {err}"),
                });
                return;
            }
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let place = || format!("{name} line {number}");
        match format {
            Format::CloudTrail if is_records_document(text.as_bytes()) => {
                read_document(&place(), text, event, skip);
            }
            Format::CloudTrail => match cloudtrail::parse_record(text) {
                Ok(Ok(parsed)) => event(parsed),
                Ok(Err(err)) => skip(Skip {
                    place: place(),
                    reason: err.to_string(),
                }),
                Err(err) => skip(Skip {
                    place: place(),
                    reason: format!("not a CloudTrail record: {err}"),
                }),
            },
            Format::Jsonl => match jsonl::parse_line(text) {
                Ok(Ok(parsed)) => event(parsed),
                Ok(Err(err)) => skip(Skip {
                    place: place(),
                    reason: err.to_string(),
                }),
                Err(err) => skip(Skip {
                    place: place(),
                    reason: format!("not a JSON object: {err}"),
                }),
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
            name_time("111122223333_CloudTrail_us-east-1_20240301T1005Z_abc.json.gz").as_deref(),
            Some("20240301T1005Z")
        );
        assert_eq!(name_time("events.jsonl"), None);
    }

    #[test]
    fn records_documents_are_told_from_lines() {
        assert!(is_records_document(b"{\"Records\": ["));
        assert!(is_records_document(b"\n  {\n  \"Records\": ["));
        assert!(!is_records_document(b"{\"eventVersion\":\"1.08\"}"));
        assert!(!is_records_document(b"[]"));
    }
}
