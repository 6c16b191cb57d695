"""Built-in encoders, keyword indexes and fusers, registered through entry points like any plugin."""
