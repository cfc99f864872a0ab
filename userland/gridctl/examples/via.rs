// Experiment (not committed): NodeInfo from a node reached through a gateway.
use gridctl::client::{Client, Options};
use gridctl::key::UserKey;
use gridctl::target::Target;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let gw = Target::parse(&a[1]).unwrap();
    let key = gridctl::parse_hex::<32>(&a[2]).unwrap();
    let user = UserKey::generate().unwrap();
    let t = std::time::Instant::now();
    let mut c = Client::connect_via(&gw, key, &user, Options::default()).unwrap();
    println!("connected in {:?}", t.elapsed());
    println!("{:?}", c.call(&control::Request::NodeInfo).unwrap());
    c.close();
}
