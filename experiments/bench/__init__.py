"""The benchmark's parts, one job each: ``settings`` (what a measurement is
told), ``driver`` (checks, schedules and runs the measurements in their own
processes; no TensorFlow), ``learners`` (one configuration through the
registry), ``worker`` (times one configuration), ``report`` (summaries and
tables) and ``flops`` (the FLOP count and the CPU's peak). The binary is
``experiments.benchmark``."""
