"""Third-party and generated code the plugin carries; nothing here is edited by hand."""
