"""`kpiwatch backtest`: what the rules would have done over stored (or fetched) history."""
