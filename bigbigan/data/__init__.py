"""Input data: host-side batch iterators that the trainer turns into global device arrays."""
