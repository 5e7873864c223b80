use actor_runtime::actor;

#[derive(Debug)]
pub enum ParseError {
    Empty,
}

#[actor]
async fn parse(text: String) -> Result<u32, ParseError> {
    text.parse().map_err(|_| ParseError::Empty)
}

fn main() {}
