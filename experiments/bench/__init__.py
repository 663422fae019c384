"""The benchmark's parts, one job each: ``settings`` (what a measurement is
told), ``driver`` (checks, schedules and runs the measurements in their own
processes; no TensorFlow), ``learners`` (one configuration through the
registry), ``worker`` (times one configuration), ``yardstick`` (the PyTorch
yardsticks and what each computes), ``report`` (summaries and tables),
``flops`` (the FLOP counts and the CPU's peak) and ``memory`` (a process's own
peak RSS, and the wrapper that gives a yardstick's). The binary is
``experiments.benchmark``."""
