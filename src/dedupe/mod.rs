//! Block-level dedupe of local snapshots with FIDEDUPERANGE.
