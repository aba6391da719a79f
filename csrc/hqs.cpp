// hqs CPU kernels (placeholder until the kernels land).
