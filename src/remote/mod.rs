//! Object stores behind one small trait: S3 and a local directory.
