//! Integration tests: they drive the real `coffer` binary in a clean
//! environment, against the contract in docs/CLI.md.

mod env;

mod adversarial;
mod agent;
mod agent_sim;
mod attack;
mod audit;
mod bad_input;
mod caps;
mod cli;
mod cold;
mod crash;
mod dedup;
mod disaster;
mod erase;
mod export;
mod faults;
mod fleet;
mod golden;
mod heal;
mod history;
mod hostile;
mod hygiene;
mod install;
mod interrupt;
mod moto;
mod object_lock;
mod prune;
mod quirks;
mod recovery;
mod retention;
mod roundtrip;
mod s3;
mod s3server;
mod seaweed;
mod selection;
mod signing;
mod suspect;
mod tamper;
mod time_formats;
mod transport;
mod words;
