//! The cell's gRPC endpoint (`proto/demo.proto`), same logic as the HTTP API.

use tonic::{Request, Response, Status};

use super::posts::Posts;

/// Generated code.
#[allow(missing_docs, unreachable_pub, clippy::all, missing_debug_implementations)]
pub(crate) mod pb {
    tonic::include_proto!("demo.v1");
}

/// The `demo.v1.Posts` service of one cell.
#[derive(Debug, Clone)]
pub(crate) struct PostsService {
    pub(crate) posts: Posts,
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(e.to_string())
}

#[tonic::async_trait]
impl pb::posts_server::Posts for PostsService {
    async fn like(&self, req: Request<pb::LikeRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let w = self.posts.like(&req.into_inner().post, None).await.map_err(unavailable)?;
        Ok(Response::new(pb::WriteReply { id: w.id, cell: w.cell }))
    }

    async fn comment(&self, req: Request<pb::CommentRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let r = req.into_inner();
        let w = self.posts.comment(&r.post, &r.text, None).await.map_err(unavailable)?;
        Ok(Response::new(pb::WriteReply { id: w.id, cell: w.cell }))
    }

    async fn get_post(&self, req: Request<pb::GetPostRequest>) -> Result<Response<pb::Post>, Status> {
        let v = self.posts.get(&req.into_inner().post).await;
        Ok(Response::new(pb::Post { post: v.post, likes: v.likes, comments: v.comments, cell: v.cell }))
    }

    async fn state(&self, _req: Request<pb::StateRequest>) -> Result<Response<pb::StateReply>, Status> {
        let (json, digest) = self.posts.state().await;
        Ok(Response::new(pb::StateReply { cell: self.posts.cell.to_string(), json, digest }))
    }
}
