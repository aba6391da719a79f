// info_nce CPU kernels (placeholder until the kernels land).
