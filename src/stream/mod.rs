//! Streams: btrfs send -> compress -> upload, and download -> decompress -> receive.
