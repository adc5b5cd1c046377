"""Stand-in message provider: Herald's provider contract, with latency and failures on demand."""
