//! `[files]`: the gateway's file store (`rivulet send-file`, docs/FILES.md), under
//! `<data>/files`.

use serde::Deserialize;

/// `[files]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilesSection {
    max_file_mb: Option<u64>,
    max_total_mb: Option<u64>,
    max_uploads: Option<usize>,
}

/// The file store's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesSettings {
    /// Largest file, in bytes: a larger offer is refused.
    pub max_file: u64,
    /// Bytes of complete and partial files together: an offer that would pass it is refused.
    pub max_total: u64,
    /// Uploads in progress at once: one more is refused, unless one has been idle for a minute
    /// (it gives its place; its partial stays and resumes when offered again).
    pub max_uploads: usize,
}

impl Default for FilesSettings {
    fn default() -> Self {
        FilesSettings { max_file: 1 << 30, max_total: 4 << 30, max_uploads: 16 }
    }
}

impl FilesSettings {
    pub(super) fn from_section(section: Option<FilesSection>) -> Self {
        let d = FilesSettings::default();
        let Some(s) = section else { return d };
        FilesSettings {
            max_file: s.max_file_mb.map_or(d.max_file, |mb| mb.saturating_mul(1 << 20)),
            max_total: s.max_total_mb.map_or(d.max_total, |mb| mb.saturating_mul(1 << 20)),
            max_uploads: s.max_uploads.unwrap_or(d.max_uploads),
        }
    }
}
