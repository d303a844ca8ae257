"""distilabel's write buffer, widened: a column null in a leaf step's first rows and text in
later ones (an error reason) must not end the run (distilabel 1.5.3 fails to cast it back)."""

from __future__ import annotations

import pyarrow.parquet as pq
from distilabel.pipeline.write_buffer import _WriteBuffer

from tapir.pipelines.local_pipeline import _TypeWideningWriteBuffer


def _write_two_batches(cls, folder):
    buffer = cls(folder, leaf_steps={"pool"}, steps_cached={"pool": True})
    buffer._buffers["pool"] = [{"id": "a", "score_error": None}]
    buffer._write("pool")
    buffer._buffers["pool"] = [{"id": "b", "score_error": "no rating found"}]
    buffer._write("pool")
    buffer.close()
    return [row for f in sorted((folder / "pool").glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def test_a_reason_after_clean_rows_is_kept(tmp_path):
    rows = _write_two_batches(_TypeWideningWriteBuffer, tmp_path / "ours")
    assert rows == [{"id": "a", "score_error": None}, {"id": "b", "score_error": "no rating found"}]


def test_distilabels_own_buffer_still_fails_so_the_widening_is_needed(tmp_path):
    import pytest

    with pytest.raises(Exception, match="Unsupported cast from string to null"):
        _write_two_batches(_WriteBuffer, tmp_path / "theirs")
