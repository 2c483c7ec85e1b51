"""Getting an environment going: ``acgs-checks init`` (a first environment file) and ``doctor`` (what each
check can see, and the grant that fixes what it cannot)."""
