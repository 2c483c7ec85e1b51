"""The plugin's jobs, one module each; ``acgs_checks.plugin`` holds only the hooks that call them."""
