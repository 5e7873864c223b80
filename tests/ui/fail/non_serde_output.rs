use actor_runtime::actor;

#[derive(Debug)]
pub struct Report {
    pub lines: usize,
}

#[actor]
async fn summarize(text: String) -> Result<Report, std::io::Error> {
    Ok(Report { lines: text.lines().count() })
}

fn main() {}
