"""The benchmarks' harness: the only code the scripts in benchmarks/ share (a script never imports another).

Measuring and recording:
  timing.py       the timing guard (an iteration that did not get its CPU share is redone), medians after warm-up,
                  contenders alternated within a run, peak memory in a child process, the machine line
  records.py      results files (JSON lines, appended, never rewritten: command, machine, CPU, date, seed), the CPU's
                  identity (model name with family, model and stepping)
  stats.py        the rules that call differences (two standard errors; 95% t-intervals; paired intervals)
  tables.py       markdown tables of the quality benchmarks from their records; speed_tables.py of the speed ones
  parallel.py     jobs over spawned worker processes

What the benchmarks measure with:
  subjects.py     the speed contenders: ours and the peers at matched network size (compare_peers, gpu, ...)
  contenders.py   the quality contenders: each library's default model behind one interface (peer_quality, ...)
  recipes.py      ours' recipes (the levers the quality benchmark screens)
  peer_runs.py    what a peer_quality run is made of and leaves behind: data, feature classifier, x_T seeds, kept
                  networks; peer_loop.py its one training loop and the cost of its steps
  digits.py       the 8x8 digits split, the evaluation classifier, the Fréchet distance's reference and floors
  digits_models.py  the small digits models, their training loop and cache, their sample sets
"""
