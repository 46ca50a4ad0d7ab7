//! The checker: from what the senders stored and what the receivers printed, in every run of every
//! process, proves each message shown once and each file intact, or names what went wrong.
//!
//! A message is one id. The JSON-lines interface prints an event, then records it as shown; a kill
//! between the two shows the same message (same id) again at the next start, which a consumer
//! folds by id. That is counted (`reshown`) but is no defect; the same text under two ids (a second
//! message), a stored message never printed, or a phantom are.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use serde_json::Value;

/// A text the sender's `send` answered (`sent` or `queued`): it is stored, so it must arrive.
#[derive(Clone, Debug)]
pub struct Answered {
    pub from: String,
    pub to: String,
    pub text: String,
}

/// A file the sender's `send_file` answered (`file_queued`).
#[derive(Clone, Debug)]
pub struct QueuedFile {
    pub from: String,
    pub to: String,
    pub id: String,
    pub blake3: String,
}

/// One outgoing message in a sender's history: the store's word on what it holds.
#[derive(Clone, Debug)]
pub struct Stored {
    pub from: String,
    pub to: String,
    pub text: String,
}

#[derive(Debug, Default)]
pub struct Verdict {
    pub texts: usize,
    pub files: usize,
    /// Messages printed again, under the same id, after their receiver was killed.
    pub reshown: usize,
    pub defects: Vec<String>,
}

/// Whatever each receiver printed, by number.
pub type Printed<'a> = &'a HashMap<String, Vec<Value>>;

/// The texts each receiver printed: (from, text) → the distinct ids and how many times printed.
fn shown(printed: Printed) -> HashMap<(String, String, String), (BTreeSet<String>, usize)> {
    let mut shown: HashMap<_, (BTreeSet<String>, usize)> = HashMap::new();
    for (receiver, events) in printed {
        for e in events.iter().filter(|e| crate::proc::is(e, "message")) {
            let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let entry = shown.entry((field("from"), receiver.clone(), field("text"))).or_default();
            entry.0.insert(field("id"));
            entry.1 += 1;
        }
    }
    shown
}

/// Texts every answered or stored message is still missing at its receiver: the drain waits for
/// this to be empty.
pub fn missing(answered: &[Answered], stored: &[Stored], printed: Printed) -> usize {
    let shown = shown(printed);
    let wanted: BTreeSet<(String, String, String)> = answered
        .iter()
        .map(|a| (a.from.clone(), a.to.clone(), a.text.clone()))
        .chain(stored.iter().map(|s| (s.from.clone(), s.to.clone(), s.text.clone())))
        .collect();
    wanted.iter().filter(|k| !shown.contains_key(*k)).count()
}

/// The files (by id) not yet received.
pub fn missing_files(files: &[QueuedFile], printed: Printed) -> usize {
    files.iter().filter(|f| received(f, printed).is_empty()).count()
}

fn received(file: &QueuedFile, printed: Printed) -> Vec<(String, PathBuf)> {
    printed
        .get(&file.to)
        .map(|events| {
            events
                .iter()
                .filter(|e| crate::proc::is(e, "file_received"))
                .filter(|e| e.get("blake3").and_then(Value::as_str) == Some(file.blake3.as_str()))
                .filter_map(|e| {
                    let id = e.get("id").and_then(Value::as_str)?;
                    let path = e.get("path").and_then(Value::as_str)?;
                    Some((id.to_string(), PathBuf::from(path)))
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn verdict(answered: &[Answered], stored: &[Stored], files: &[QueuedFile], printed: Printed) -> Verdict {
    let mut v = Verdict::default();
    let in_store: BTreeSet<(&str, &str, &str)> =
        stored.iter().map(|s| (s.from.as_str(), s.to.as_str(), s.text.as_str())).collect();
    for a in answered {
        if !in_store.contains(&(a.from.as_str(), a.to.as_str(), a.text.as_str())) {
            v.defects.push(format!("{} answered `{}` to {} but its history lacks it", a.from, a.text, a.to));
        }
    }
    let shown = shown(printed);
    let mut expected: BTreeMap<(String, String, String), ()> = BTreeMap::new();
    for s in stored {
        expected.insert((s.from.clone(), s.to.clone(), s.text.clone()), ());
    }
    v.texts = expected.len();
    for key in expected.keys() {
        match shown.get(key) {
            None => v.defects.push(format!("`{}` from {} to {} was never shown", key.2, key.0, key.1)),
            Some((ids, _)) if ids.len() > 1 => v.defects.push(format!(
                "`{}` from {} to {} was shown as {} messages",
                key.2,
                key.0,
                key.1,
                ids.len()
            )),
            Some((_, times)) => v.reshown += times - 1,
        }
    }
    for key in shown.keys() {
        if !expected.contains_key(key) {
            v.defects.push(format!("{} was shown `{}` from {}, which no history holds", key.1, key.2, key.0));
        }
    }
    v.files = files.len();
    for f in files {
        let got = received(f, printed);
        let ids: BTreeSet<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
        match ids.len() {
            0 => v.defects.push(format!("file {} from {} to {} never arrived", f.id, f.from, f.to)),
            1 => {}
            n => v.defects.push(format!("file {} from {} to {} arrived {n} times", f.id, f.from, f.to)),
        }
        for (_, path) in got {
            match std::fs::read(&path) {
                Ok(bytes) if blake3::hash(&bytes).to_hex().as_str() == f.blake3 => {}
                Ok(_) => v.defects.push(format!("{} does not hash to {}", path.display(), f.blake3)),
                Err(e) => v.defects.push(format!("{}: {e}", path.display())),
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(id: &str, from: &str, text: &str) -> Value {
        json!({"event":"message","id":id,"from":from,"text":text})
    }

    fn stored(from: &str, to: &str, text: &str) -> Stored {
        Stored { from: from.into(), to: to.into(), text: text.into() }
    }

    #[test]
    fn a_message_shown_again_under_its_id_is_folded_and_under_two_ids_is_a_defect() {
        let printed = HashMap::from([(
            "2".to_string(),
            vec![msg("A", "1", "one"), msg("A", "1", "one"), msg("B", "1", "two"), msg("C", "1", "two")],
        )]);
        let v = verdict(&[], &[stored("1", "2", "one"), stored("1", "2", "two")], &[], &printed);
        assert_eq!(v.reshown, 1);
        assert_eq!(v.defects, vec!["`two` from 1 to 2 was shown as 2 messages".to_string()]);
    }

    #[test]
    fn lost_answered_and_phantom_messages_are_named() {
        let printed = HashMap::from([("2".to_string(), vec![msg("X", "1", "ghost")])]);
        let answered = [Answered { from: "1".into(), to: "2".into(), text: "kept?".into() }];
        let v = verdict(&answered, &[stored("1", "2", "stored")], &[], &printed);
        assert_eq!(
            v.defects,
            vec![
                "1 answered `kept?` to 2 but its history lacks it".to_string(),
                "`stored` from 1 to 2 was never shown".to_string(),
                "2 was shown `ghost` from 1, which no history holds".to_string(),
            ]
        );
        assert_eq!(missing(&answered, &[stored("1", "2", "stored")], &printed), 2);
    }
}
