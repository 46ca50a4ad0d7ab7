//! Photos drawn in the terminal: decoding a file into a picture fitted to a box of cells
//! ([`encode`], on a blocking thread) and the few pictures kept ready to draw ([`Photos`]).
//!
//! `ratatui-image` draws them with the terminal's own graphics (kitty, sixel, iTerm2) where the
//! terminal has them, and with Unicode half-blocks elsewhere, tmux included.

use std::collections::HashMap;
use std::path::Path;

use image::{DynamicImage, ImageReader, Limits};
use ratatui::layout::Size;
use ratatui_image::picker::Picker;
use ratatui_image::protocol::Protocol;
use ratatui_image::{FilterType, Resize};
use whatsap2p_client::MessageId;

/// Largest picture decoded, each side: bigger ones are refused, not allocated.
pub const MAX_SIDE: u32 = 16_384;
/// Most memory one decode may take.
pub const MAX_DECODE_BYTES: u64 = 512 << 20;
/// Pictures kept encoded; those farthest from the view go first.
pub const MAX_KEPT: usize = 24;
/// Rows of a photo's thumbnail in the conversation.
pub const THUMB_ROWS: u16 = 8;
/// Most columns of a thumbnail.
pub const THUMB_COLS: u16 = 32;

/// Reads `path` as an image and fits it in `cells` for `picker`'s terminal.
pub fn encode(picker: &Picker, path: &Path, cells: Size) -> Result<Protocol, String> {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    let mut reader = ImageReader::open(path)
        .and_then(ImageReader::with_guessed_format)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    reader.limits(limits);
    let image = reader.decode().map_err(|e| format!("{}: {e}", path.display()))?;
    fit(picker, image, cells)
}

/// Fits a decoded picture in `cells`.
pub fn fit(picker: &Picker, image: DynamicImage, cells: Size) -> Result<Protocol, String> {
    let font = picker.font_size();
    // A fast first reduction, so the filter below works on a small picture.
    let (w, h) =
        (u32::from(cells.width) * u32::from(font.width), u32::from(cells.height) * u32::from(font.height));
    let image =
        if image.width() > 2 * w || image.height() > 2 * h { image.thumbnail(2 * w, 2 * h) } else { image };
    // Scaled, not only fitted: a small picture fills its box rather than a corner of it.
    picker.new_protocol(image, cells, Resize::Scale(Some(FilterType::Triangle))).map_err(|e| e.to_string())
}

/// Where one picture stands.
pub enum Kept {
    /// Being decoded.
    Pending,
    /// Ready to draw.
    Ready(Box<Protocol>),
    /// Could not be decoded (the reason).
    Failed(String),
}

/// Pictures by message and box size, at most [`MAX_KEPT`] ready.
#[derive(Default)]
pub struct Photos {
    kept: HashMap<(MessageId, (u16, u16)), Kept>,
    /// Order in which pictures were last wanted, most recent last.
    used: Vec<(MessageId, (u16, u16))>,
}

fn key(id: MessageId, cells: Size) -> (MessageId, (u16, u16)) {
    (id, (cells.width, cells.height))
}

impl Photos {
    /// The picture of `id` fitted in `cells`, if known.
    pub fn get(&self, id: MessageId, cells: Size) -> Option<&Kept> {
        self.kept.get(&key(id, cells))
    }

    /// Notes that `id` is wanted at `cells`; true when it must be decoded (not known yet).
    pub fn want(&mut self, id: MessageId, cells: Size) -> bool {
        let k = key(id, cells);
        self.used.retain(|u| *u != k);
        self.used.push(k);
        if self.kept.contains_key(&k) {
            return false;
        }
        self.kept.insert(k, Kept::Pending);
        self.trim();
        true
    }

    fn trim(&mut self) {
        while self.used.len() > MAX_KEPT {
            let old = self.used.remove(0);
            self.kept.remove(&old);
        }
    }

    /// A decode finished; the least recently wanted pictures beyond [`MAX_KEPT`] are dropped.
    pub fn done(&mut self, id: MessageId, cells: Size, result: Result<Box<Protocol>, String>) {
        let k = key(id, cells);
        if !self.kept.contains_key(&k) {
            return;
        }
        self.kept.insert(
            k,
            match result {
                Ok(p) => Kept::Ready(p),
                Err(e) => Kept::Failed(e),
            },
        );
        self.trim();
    }

    /// Pictures held (any state), for tests and the memory bound.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_more_pictures_than_kept_then_the_least_recently_wanted_go() {
        let mut photos = Photos::default();
        let cells = Size::new(4, 2);
        let ids: Vec<MessageId> = (0..MAX_KEPT + 5).map(|_| MessageId::new()).collect();
        for id in &ids {
            assert!(photos.want(*id, cells));
            assert!(!photos.want(*id, cells), "asked once");
            photos.done(*id, cells, Err("not a picture".into()));
        }
        assert_eq!(photos.len(), MAX_KEPT);
        assert!(photos.get(ids[0], cells).is_none());
        assert!(matches!(photos.get(ids[MAX_KEPT + 4], cells), Some(Kept::Failed(_))));
    }

    #[test]
    fn given_a_picture_file_then_it_is_fitted_in_its_box_with_half_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("red.png");
        image::RgbImage::from_pixel(64, 32, image::Rgb([200, 0, 0])).save(&path).expect("save");
        let proto = encode(&Picker::halfblocks(), &path, Size::new(10, 5)).expect("encode");
        assert!(proto.size().width <= 10 && proto.size().height <= 5, "{:?}", proto.size());
        let garbage = dir.path().join("x.png");
        std::fs::write(&garbage, b"not a png").expect("write");
        assert!(encode(&Picker::halfblocks(), &garbage, Size::new(10, 5)).is_err());
    }
}
