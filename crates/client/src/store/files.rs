//! Files sent and received, and the outgoing ones still to deliver.

use rusqlite::{params, OptionalExtension};
use whatsap2p_proto::{MessageId, Number};

use super::{now_ms, FileRecord, FileState, Store};
use crate::ClientError;

impl Store {
    /// Records a file (`pending` for one to send, `received` for one saved).
    pub async fn insert_file(&self, f: &FileRecord, state: &'static str) -> Result<(), ClientError> {
        let f = f.clone();
        self.with(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO files (id, peer, outgoing, path, name, size, media_type, blake3, state, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    f.id.to_string(),
                    f.peer.as_str(),
                    f.outgoing,
                    f.path.to_string_lossy(),
                    f.name,
                    f.size as i64,
                    f.media_type,
                    hex::encode(f.blake3),
                    state,
                    now_ms()
                ],
            )
            .map(|_| ())
        })
        .await
    }

    /// Sets a file's state.
    pub async fn set_file_state(&self, id: MessageId, state: FileState) -> Result<(), ClientError> {
        let id = id.to_string();
        self.with(move |c| {
            c.execute("UPDATE files SET state = ?2 WHERE id = ?1", params![id, state.as_str()]).map(|_| ())
        })
        .await
    }

    /// `peer` accepted our request: the files it held (state `held`) are to be offered again.
    /// Returns them, now `pending`.
    pub(crate) async fn release_held_files(&self, peer: &Number) -> Result<Vec<FileRecord>, ClientError> {
        let peer = peer.to_string();
        let released: std::collections::HashSet<String> = self
            .with(move |c| {
                c.prepare(
                    "UPDATE files SET state = 'pending' WHERE peer = ?1 AND outgoing = 1 AND state = 'held'
                     RETURNING id",
                )?
                .query_map(params![peer], |r| r.get(0))?
                .collect()
            })
            .await?;
        Ok(self.pending_files().await?.into_iter().filter(|f| released.contains(&f.id.to_string())).collect())
    }

    /// Where the file `id` from `peer` stands here, if it was ever recorded: saved (a retry of a
    /// finished transfer), or cancelled by our user.
    pub async fn incoming_file_state(
        &self,
        peer: &Number,
        id: MessageId,
    ) -> Result<Option<FileState>, ClientError> {
        let (peer, id) = (peer.to_string(), id.to_string());
        self.with(move |c| {
            c.query_row(
                "SELECT state FROM files WHERE id = ?1 AND peer = ?2 AND outgoing = 0",
                params![id, peer],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|state| state.map(|s| FileState::parse(&s)))
        })
        .await
    }

    /// Outgoing files not yet received, oldest first: what to resume after a restart.
    pub async fn pending_files(&self) -> Result<Vec<FileRecord>, ClientError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, peer, path, name, size, media_type, blake3 FROM files
                 WHERE outgoing = 1 AND state = 'pending' ORDER BY created_at_ms, id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, peer, path, name, size, media_type, hash) = row?;
                let mut blake3 = [0u8; 32];
                let parsed =
                    (id.parse::<MessageId>(), Number::new(&peer), hex::decode_to_slice(&hash, &mut blake3));
                if let (Ok(id), Ok(peer), Ok(())) = parsed {
                    out.push(FileRecord {
                        id,
                        peer,
                        outgoing: true,
                        path: path.into(),
                        name,
                        size: size as u64,
                        media_type,
                        blake3,
                    });
                }
            }
            Ok(out)
        })
        .await
    }
}
