"""One module per task family: how its raw data becomes tensors and which model it trains."""
