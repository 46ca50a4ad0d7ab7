//! Tab completion of paths for `/photo` and `/file`: what the typed start of a path can become. The
//! folder is read on a blocking thread (`calls`), never on the draw loop.

use std::path::Path;

use crate::command::expand_home;

/// Most entries of one folder looked at: a huge folder completes from its first ones.
pub const MAX_LISTED: usize = 10_000;
/// Most candidates reported back to show.
pub const MAX_CANDIDATES: usize = 40;

/// What Tab turns a partial path into.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    /// The path completed as far as every match agrees.
    pub path: String,
    /// The names that still fit, when more than one does (at most [`MAX_CANDIDATES`]).
    pub candidates: Vec<String>,
}

/// Completes `partial` from the entries of its folder, as `(name, is_folder)` from `list`.
pub fn complete(partial: &str, list: impl FnOnce(&Path) -> Vec<(String, bool)>) -> Completion {
    let (folder, start) = match partial.rfind('/') {
        Some(i) => (&partial[..=i], &partial[i + 1..]),
        None => ("", partial),
    };
    let dir = if folder.is_empty() { expand_home(".") } else { expand_home(folder) };
    let mut fits: Vec<(String, bool)> = list(&dir)
        .into_iter()
        .filter(|(name, _)| name.starts_with(start) && (start.starts_with('.') || !name.starts_with('.')))
        .collect();
    fits.sort();
    match fits.as_slice() {
        [] => Completion { path: partial.to_owned(), candidates: Vec::new() },
        [(name, is_dir)] => Completion {
            path: format!("{folder}{name}{}", if *is_dir { "/" } else { "" }),
            candidates: Vec::new(),
        },
        [(first, _), rest @ ..] => {
            let mut common = first.len();
            for (name, _) in rest {
                common = first.bytes().zip(name.bytes()).take(common).take_while(|(a, b)| a == b).count();
            }
            while !first.is_char_boundary(common) {
                common -= 1;
            }
            let candidates = fits
                .iter()
                .take(MAX_CANDIDATES)
                .map(|(name, is_dir)| format!("{name}{}", if *is_dir { "/" } else { "" }))
                .collect();
            Completion { path: format!("{folder}{}", &first[..common]), candidates }
        }
    }
}

/// The entries of `dir` (at most [`MAX_LISTED`]); nothing when it cannot be read.
pub fn read_folder(dir: &Path) -> Vec<(String, bool)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .take(MAX_LISTED)
        .map(|e| {
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false)
                || (e.file_type().map(|t| t.is_symlink()).unwrap_or(false) && e.path().is_dir());
            (e.file_name().to_string_lossy().into_owned(), is_dir)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(_: &Path) -> Vec<(String, bool)> {
        ["cat.jpg", "cats", "car.png", ".hidden", "dog.gif"]
            .iter()
            .map(|n| (n.to_string(), *n == "cats"))
            .collect()
    }

    #[test]
    fn given_a_partial_path_then_it_completes_to_what_all_matches_share() {
        assert_eq!(complete("/p/ca", listing).path, "/p/ca");
        assert_eq!(complete("/p/ca", listing).candidates, ["car.png", "cat.jpg", "cats/"]);
        assert_eq!(complete("/p/cat", listing).path, "/p/cat");
        assert_eq!(complete("/p/cats", listing), Completion { path: "/p/cats/".into(), candidates: vec![] });
        assert_eq!(complete("/p/d", listing).path, "/p/dog.gif");
        assert_eq!(complete("/p/.h", listing).path, "/p/.hidden");
        assert_eq!(complete("/p/zzz", listing).path, "/p/zzz");
    }

    #[test]
    fn given_a_real_folder_then_its_entries_are_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("photo.png"), b"x").expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        let partial = format!("{}/p", dir.path().display());
        assert_eq!(complete(&partial, read_folder).path, format!("{}/photo.png", dir.path().display()));
        let partial = format!("{}/s", dir.path().display());
        assert_eq!(complete(&partial, read_folder).path, format!("{}/sub/", dir.path().display()));
    }
}
