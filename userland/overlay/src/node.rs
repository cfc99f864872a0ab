pub struct Node; pub struct Config; pub enum Event{} pub enum NodeError{} pub struct PeerId;
