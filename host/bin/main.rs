fn main() {
    println!("{}", flashmla_etap::PTX.len());
}
