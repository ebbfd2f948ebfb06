//! Staff operations on the subscriber list: export, bulk import, remove, forget.
