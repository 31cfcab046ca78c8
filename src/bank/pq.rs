//! Product quantizer (filled in by the PQ work).
