//! The TrueType font plots draw text with: DejaVu Sans compiled into the binary (assets/fonts/,
//! Bitstream Vera license), so no system font is ever needed or read; `S3PET_FONT` names another
//! TrueType file to use instead (an unusable one falls back to the embedded font with a warning).
use crate::error::{Error, Result};
use plotters::style::FontStyle;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// DejaVu Sans 2.37 (Debian's fonts-dejavu-core 2.37-6, unmodified; assets/fonts/README.md).
pub const EMBEDDED_FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Where the plots' text font came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FontSource {
    /// The TrueType file named by `S3PET_FONT`.
    File(PathBuf),
    /// The DejaVu Sans compiled into the binary.
    Embedded,
}

/// Registers the font plots draw text with: the file `requested` (S3PET_FONT) when it loads as a
/// TrueType font, else (with a warning naming the file) the embedded DejaVu Sans.
pub fn register(requested: Option<&Path>) -> Result<FontSource> {
    if let Some(path) = requested {
        let why = match std::fs::read(path) {
            Ok(bytes) => {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(FontSource::File(path.to_path_buf()));
                }
                "not a TrueType font".to_string()
            }
            Err(e) => format!("unreadable ({e})"),
        };
        tracing::warn!(S3PET_FONT = %path.display(), "{why}; plots use the embedded DejaVu Sans");
    }
    plotters::style::register_font("sans-serif", FontStyle::Normal, EMBEDDED_FONT)
        .map_err(|_| Error::Msg("the embedded DejaVu Sans does not load as a TrueType font".into()))?;
    Ok(FontSource::Embedded)
}

/// Registers the font once per process (S3PET_FONT read then); every figure calls this first.
pub fn ensure() -> Result<()> {
    static DONE: OnceLock<std::result::Result<FontSource, String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let requested = std::env::var_os("S3PET_FONT").filter(|v| !v.is_empty()).map(PathBuf::from);
        register(requested.as_deref()).map_err(|e| e.to_string())
    })
    .clone()
    .map(|_| ())
    .map_err(Error::Msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_font_is_used_without_an_override_or_when_it_is_unusable() {
        assert_eq!(register(None).unwrap(), FontSource::Embedded);
        let missing = Path::new("/nonexistent/fonts/NoSuch.ttf");
        assert_eq!(register(Some(missing)).unwrap(), FontSource::Embedded);
        let not_a_font = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        assert_eq!(register(Some(&not_a_font)).unwrap(), FontSource::Embedded);
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/fonts/DejaVuSans.ttf");
        assert_eq!(register(Some(&file)).unwrap(), FontSource::File(file.clone()));
    }
}
