"""The ground floor of storage: atomic writes that never follow a symbolic link, bounded reads of files a user
hands in, safe file-name components, and the append-only trace log. Everything above writes through here."""
