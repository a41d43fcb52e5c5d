//! Newline-delimited frames on async streams, with a hard size bound.
//!
//! A line longer than the bound is never buffered: reading stops at the
//! bound and the caller answers `too_large` and closes, because the rest
//! of the stream can no longer be trusted to start at a message boundary.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The line exceeds the limit.
    #[error("line longer than {0} bytes")]
    TooLarge(usize),
    /// The stream ended in the middle of a line.
    #[error("connection closed in the middle of a line")]
    Truncated,
    /// The transport failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one line (without its `\n`, and without a trailing `\r`) into
/// `buf`, which is cleared first. Returns `Ok(false)` on a clean end of
/// stream. At most `bytes_max` bytes (newline excluded) are ever held.
pub async fn read_frame<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    bytes_max: usize,
) -> Result<bool, FrameError> {
    buf.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return if buf.is_empty() {
                Ok(false)
            } else {
                Err(FrameError::Truncated)
            };
        }
        if let Some(pos) = available.iter().position(|&b| b == b'\n') {
            if buf.len() + pos > bytes_max {
                return Err(FrameError::TooLarge(bytes_max));
            }
            buf.extend_from_slice(&available[..pos]);
            reader.consume(pos + 1);
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(true);
        }
        let n = available.len();
        if buf.len() + n > bytes_max {
            return Err(FrameError::TooLarge(bytes_max));
        }
        buf.extend_from_slice(available);
        reader.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], max: usize) -> (Vec<Vec<u8>>, Option<FrameError>) {
        let mut reader = tokio::io::BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            match read_frame(&mut reader, &mut buf, max).await {
                Ok(true) => out.push(buf.clone()),
                Ok(false) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[tokio::test]
    async fn splits_lines_across_buffer_boundaries() {
        let (lines, err) = frames(b"hello\nworld!!\r\n\n", 16).await;
        assert!(err.is_none());
        assert_eq!(
            lines,
            vec![b"hello".to_vec(), b"world!!".to_vec(), b"".to_vec()]
        );
    }

    #[tokio::test]
    async fn refuses_long_lines_and_truncation() {
        let (lines, err) = frames(b"12345\n123456\n", 5).await;
        assert_eq!(lines, vec![b"12345".to_vec()]);
        assert!(matches!(err, Some(FrameError::TooLarge(5))));
        let (_, err) = frames(b"abc", 5).await;
        assert!(matches!(err, Some(FrameError::Truncated)));
        let (_, err) = frames(&[b'x'; 1000], 5).await;
        assert!(matches!(err, Some(FrameError::TooLarge(5))));
    }
}
