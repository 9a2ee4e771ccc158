//! Integration tests: the real daemon binary, real SMTP clients, GnuPG.

mod admin;
mod commands;
mod common;
mod corpus;
mod corpus_make;
mod crash;
mod delivery;
mod demo;
mod durability;
mod encrypted;
mod imap;
mod inline;
mod join;
mod keycheck;
mod operator;
mod postfix;
mod posts;
mod readers;
mod rejection;
mod release;
mod replay;
mod retry;
mod roster;
mod service;
mod submit;
mod wrapped;
