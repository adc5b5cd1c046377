"""Herald's sender: Dramatiq workers that deliver messages to the provider."""
