//! The properties the fuzz targets check (see `checks.rs`).
pub mod checks;
