"""`dpserve plan`: choose DP × TP × PP for a model on N GPUs, predict, simulate, diagnose a fleet."""
