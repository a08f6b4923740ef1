"""Stage 4: knowledge distillation of a teacher into a smaller student, on real data, a synthetic
set, or both: the student (`student`), the loss registry with each loss's options and traits
(`losses`; FSD's CKA and centroid memory in `cka`), training with DistributedDataParallel and
resume (`distill`), the data sources (`data`) and the report (`report`)."""
