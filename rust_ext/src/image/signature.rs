//! What a file the decoder does not recognise is, when its first bytes say so: formats no
//! decoder here reads (HEIC, JPEG 2000, JPEG XL, SVG) and files that are not images at all,
//! which crawls and folders hold in an image's place (an HTML error page, a Git LFS pointer of a
//! repository cloned without its files, an archive). Only named; never decoded.

/// The name of what `data` is, or None when its first bytes match no signature below.
pub(crate) fn known(data: &[u8]) -> Option<&'static str> {
    if data.len() >= 12 && &data[4..8] == b"ftyp" {
        return Some(match &data[8..12] {
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => {
                "HEIC/HEIF, which is not decoded"
            }
            b"avif" | b"avis" => "AVIF, which is not decoded",
            b"crx " => "a Canon CR3 raw photo, which is not decoded",
            _ => "an ISO media file (MP4, QuickTime or similar)",
        });
    }
    if data.starts_with(b"\x00\x00\x00\x0cjP  \r\n\x87\n") || data.starts_with(b"\xff\x4f\xff\x51") {
        return Some("JPEG 2000, which is not decoded");
    }
    if data.starts_with(b"\xff\x0a") || data.starts_with(b"\x00\x00\x00\x0cJXL \r\n\x87\n") {
        return Some("JPEG XL, which is not decoded");
    }
    let binary: [(&[u8], &'static str); 6] = [
        (b"PK\x03\x04", "a zip archive"),
        (b"PK\x05\x06", "a zip archive (empty)"),
        (b"\x1f\x8b", "gzip data"),
        (b"%PDF-", "a PDF document"),
        (b"PAR1", "a Parquet file"),
        (b"version https://git-lfs", "a Git LFS pointer (the file itself was not fetched)"),
    ];
    if let Some((_, name)) = binary.iter().find(|(magic, _)| data.starts_with(magic)) {
        return Some(name);
    }
    if data.len() >= 262 && &data[257..262] == b"ustar" {
        return Some("a tar archive");
    }
    markup(data)
}

/// HTML or SVG: text that starts (after a byte-order mark and white space) with their tags.
fn markup(data: &[u8]) -> Option<&'static str> {
    let text = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    let start = text.iter().position(|b| !b.is_ascii_whitespace())?;
    let head: Vec<u8> = text[start..].iter().take(1024).map(u8::to_ascii_lowercase).collect();
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    if head.starts_with(b"<svg") || (head.starts_with(b"<?xml") && has(b"<svg")) {
        return Some("an SVG drawing, which is not decoded");
    }
    let page = [&b"<!doctype html"[..], b"<html", b"<head", b"<body"];
    if page.iter().any(|tag| head.starts_with(tag)) || (head.starts_with(b"<?xml") && has(b"<html")) {
        return Some("an HTML page, not an image (a web server's error page saved in its place?)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_the_first_bytes_say() {
        let mut heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic".to_vec();
        assert_eq!(known(&heic), Some("HEIC/HEIF, which is not decoded"));
        heic[8..12].copy_from_slice(b"isom");
        assert_eq!(known(&heic), Some("an ISO media file (MP4, QuickTime or similar)"));
        assert_eq!(known(b"PK\x03\x04\x14\x00"), Some("a zip archive"));
        assert_eq!(
            known(b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n"),
            Some("a Git LFS pointer (the file itself was not fetched)")
        );
        assert_eq!(known(b"\xff\x4f\xff\x51\x00\x2f"), Some("JPEG 2000, which is not decoded"));
        assert_eq!(known(b"\xff\x0a\xfa"), Some("JPEG XL, which is not decoded"));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(known(&tar), Some("a tar archive"));
        let page = Some("an HTML page, not an image (a web server's error page saved in its place?)");
        assert_eq!(known(b"\xef\xbb\xbf\r\n  <!DOCTYPE html><html><body>404</body></html>"), page);
        assert_eq!(known(b"<HTML><HEAD><TITLE>403 Forbidden</TITLE>"), page);
        let svg = Some("an SVG drawing, which is not decoded");
        assert_eq!(known(b"<?xml version=\"1.0\"?>\n<!-- x -->\n<svg xmlns=\"http://www.w3.org/2000/svg\">"), svg);
        assert_eq!(known(b"<svg width=\"1\"/>"), svg);
    }

    #[test]
    fn other_bytes_are_not_named() {
        for data in [&b""[..], b"hello world", b"   ", b"\x00\x05\x16\x07", b"<p>text", b"<?xml version=\"1.0\"?><a/>"] {
            assert_eq!(known(data), None, "{data:?}");
        }
        assert_eq!(known(&[0u8; 300]), None);
    }
}
