"""Stage 4: knowledge distillation of a teacher into a smaller student, on real data, a synthetic
set, or both: the student (`student`), the loss registry (`losses`), training with data
parallelism and resume (`distill`), the data sources (`data`) and the report (`report`)."""
