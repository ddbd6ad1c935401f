package main

// afterDrop, when set, runs right after the privileges are dropped, before
// ready. Only test binaries set it (privilege_trigger.go).
var afterDrop func()
