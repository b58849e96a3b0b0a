"""Many runs from one config: ``launch`` (a sweep's runs, in order, as local processes, a SLURM array or a
printed list), ``population`` (runs that differ only in values as one vmapped program), ``aggregate`` (their
results as mean and spread per configuration)."""
