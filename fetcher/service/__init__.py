"""The API side: HTTP clients, authentication, the restore-jobs client and its model."""
