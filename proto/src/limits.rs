//! Size limits. Every input that crosses a trust boundary is bounded before it is parsed, so
//! a hostile peer cannot make a device or the controller allocate without limit.

/// Longest identifier (device id, hardware id, release name, artifact target, version).
/// Names become MQTT topic levels and file names; 64 keeps topics short and paths portable.
pub const MAX_NAME_LEN: usize = 64;

/// Largest signed document (trust root or release manifest) accepted, in bytes. A root with
/// a few hundred keys or a manifest with a few hundred artifacts fits in a fraction of this;
/// anything larger is an attack or a mistake.
pub const MAX_DOCUMENT_BYTES: usize = 128 * 1024;

/// Largest MQTT message payload in the protocol, in bytes. An update command embeds a release
/// manifest ([`MAX_DOCUMENT_BYTES`]) plus its own fields, so it gets twice that. Clients and
/// brokers set their maximum packet size from this.
pub const MAX_MESSAGE_BYTES: usize = 2 * MAX_DOCUMENT_BYTES;

/// Most signatures one document may carry. Thresholds are small numbers; a document with more
/// signatures than this is refused before any of them is checked, bounding verification work.
pub const MAX_SIGNATURES: usize = 32;

/// Longest free-text reason in a report (a failure message), in bytes. Enough for a useful
/// error chain; bounded so reports stay small on metered links.
pub const MAX_REASON_LEN: usize = 1024;

/// Most error signatures in one health-signals batch. A healthy device logs a handful of
/// distinct error templates per minute; a device with more is broken in a way 64 already
/// shows, and the bound keeps a batch (64 × [`crate::signals::MAX_EXAMPLE_BYTES`] of examples)
/// far below [`MAX_MESSAGE_BYTES`].
pub const MAX_BATCH_SIGNATURES: usize = 64;

/// Most application metrics in one health-signals batch.
pub const MAX_BATCH_METRICS: usize = 64;

/// Longest boot id in a health-signals batch (a Linux boot id is a 36-character UUID).
pub const MAX_BOOT_ID_LEN: usize = 64;
