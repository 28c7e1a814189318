"""Recording sources; each turns files (or a simulation) into :class:`nfm.data.Session` objects."""
