//! Object key naming: the public, stable key format (DESIGN.md section 3).
