"""What every stage shares: settings, the data contract, the database and its migrations,
and the scheduler of periodic jobs."""
