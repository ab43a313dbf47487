"""Backfill: copy the old shape into the new in key-range batches, resumable and throttled."""
