//! Reading stdin one line at a time with a size limit, so a runaway producer cannot make the client
//! buffer without bound.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Longest input line accepted (a text message is at most 32 KiB; JSON escaping can triple it).
pub const MAX_LINE: usize = 256 * 1024;

/// One line of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line, without its newline.
    Text(String),
    /// A line over [`MAX_LINE`] bytes, skipped whole.
    TooLong(usize),
    /// A line that is not UTF-8.
    NotUtf8,
}

/// Reads the next line; `None` at end of input.
pub async fn next_line<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let mut total = 0usize;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            if total == 0 {
                return Ok(None);
            }
            break;
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if total + take <= MAX_LINE + 1 {
            buf.extend_from_slice(&chunk[..take]);
        }
        total += take;
        r.consume(take);
        if done {
            break;
        }
    }
    if total > MAX_LINE + 1 {
        return Ok(Some(Line::TooLong(total)));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8(buf).map(Line::Text).unwrap_or(Line::NotUtf8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn given_lines_then_split_and_overlong_one_is_skipped_whole() {
        let mut input = format!("a\r\n{}\nb", "x".repeat(MAX_LINE + 10)).into_bytes();
        input.extend_from_slice(b"\n\xff\n");
        let mut r = tokio::io::BufReader::new(&input[..]);
        assert_eq!(next_line(&mut r).await.expect("io"), Some(Line::Text("a".into())));
        assert!(matches!(next_line(&mut r).await.expect("io"), Some(Line::TooLong(_))));
        assert_eq!(next_line(&mut r).await.expect("io"), Some(Line::Text("b".into())));
        assert_eq!(next_line(&mut r).await.expect("io"), Some(Line::NotUtf8));
        assert_eq!(next_line(&mut r).await.expect("io"), None);
    }
}
